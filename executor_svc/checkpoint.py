"""Reading and writing Hugging Face-format model directories.

A directory holds ``config.json``, the weights as ``model.safetensors`` or as shards listed in
``model.safetensors.index.json``, and usually ``tokenizer.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from executor_svc.model_config import LlamaConfig

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


class CheckpointError(ValueError):
    """The directory is not a loadable checkpoint; the message says what is missing or wrong."""


def read_config(model_dir: Path) -> LlamaConfig:
    path = model_dir / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{model_dir} has no config.json")
    return LlamaConfig.from_hf_dict(json.loads(path.read_text()))


def read_state_dict(model_dir: Path, device: torch.device) -> dict[str, torch.Tensor]:
    """All tensors of the checkpoint, from a single file or every shard of the index."""
    if (model_dir / INDEX_FILE).is_file():
        weight_map: dict[str, str] = json.loads((model_dir / INDEX_FILE).read_text())["weight_map"]
        files = sorted(set(weight_map.values()))
    elif (model_dir / SINGLE_FILE).is_file():
        files = [SINGLE_FILE]
    else:
        raise CheckpointError(
            f"{model_dir} has no {SINGLE_FILE} or {INDEX_FILE} (only safetensors weights are supported)"
        )
    state: dict[str, torch.Tensor] = {}
    for name in files:
        if not (model_dir / name).is_file():
            raise CheckpointError(f"{model_dir}: shard {name} listed in {INDEX_FILE} is missing")
        state.update(load_file(str(model_dir / name), device=str(device)))
    return state


def write_checkpoint(
    model_dir: Path,
    config: LlamaConfig,
    state: dict[str, torch.Tensor],
    max_shard_bytes: int | None = None,
) -> None:
    """Write config.json and safetensors weights; shard them when max_shard_bytes is given."""
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.json").write_text(json.dumps(config.to_hf_dict(), indent=2) + "\n")
    tensors = {name: tensor.contiguous() for name, tensor in state.items()}
    if max_shard_bytes is None:
        save_file(tensors, str(model_dir / SINGLE_FILE), metadata={"format": "pt"})
        return
    shards: list[dict[str, torch.Tensor]] = [{}]
    shard_bytes = 0
    for name, tensor in tensors.items():
        size = tensor.numel() * tensor.element_size()
        if shards[-1] and shard_bytes + size > max_shard_bytes:
            shards.append({})
            shard_bytes = 0
        shards[-1][name] = tensor
        shard_bytes += size
    weight_map: dict[str, str] = {}
    for index, shard in enumerate(shards, start=1):
        file_name = f"model-{index:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(model_dir / file_name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, file_name))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index_json = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (model_dir / INDEX_FILE).write_text(json.dumps(index_json, indent=2) + "\n")
