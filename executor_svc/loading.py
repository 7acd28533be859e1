"""Turning a model name ("default" or a directory) into weights on the device."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from executor_svc.checkpoint import CheckpointError, read_config, read_state_dict
from executor_svc.model import LlamaForCausalLM, RotaryEmbedding
from executor_svc.model_config import LlamaConfig
from executor_svc.random_model import ensure_default_model

# Buffers some checkpoints carry that are recomputed here.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    directory: Path
    config: LlamaConfig
    model: LlamaForCausalLM
    tokenizer_json: str  # "" if the directory has no tokenizer.json
    chat_template: str = ""  # "" if tokenizer_config.json has none


def resolve_model_dir(name: str) -> Path:
    if name == "default":
        return ensure_default_model()
    directory = Path(name).expanduser()
    if not directory.is_dir():
        raise CheckpointError(f"--model {name!r}: not 'default' and not a directory")
    return directory


def load_model(directory: Path, device: torch.device, dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Load the checkpoint in `directory` onto `device` in `dtype`."""
    config = read_config(directory)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    state = {
        key: tensor.to(dtype)
        for key, tensor in read_state_dict(directory, device).items()
        if not key.endswith(_IGNORED_SUFFIXES)
    }
    result = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in result.missing_keys if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"{directory}: weights do not match the config; missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    # Non-persistent buffers are not in the checkpoint: build them on the real device.
    model.rotary = RotaryEmbedding(config.head_dim, config.max_position_embeddings, config.rope_theta).to(
        device
    )
    model.eval()
    tokenizer_path = directory / "tokenizer.json"
    tokenizer_json = tokenizer_path.read_text() if tokenizer_path.is_file() else ""
    return LoadedModel(directory, config, model, tokenizer_json, read_chat_template(directory))


def read_chat_template(directory: Path) -> str:
    """The chat template of tokenizer_config.json in `directory`, or "" if there is none (no
    file, no template, or a list of named templates without a "default")."""
    config_path = directory / "tokenizer_config.json"
    if not config_path.is_file():
        return ""
    template = json.loads(config_path.read_text()).get("chat_template", "")
    if isinstance(template, list):  # [{"name": ..., "template": ...}, ...]
        named = {
            entry.get("name"): entry.get("template", "") for entry in template if isinstance(entry, dict)
        }
        template = named.get("default", "")
    return template if isinstance(template, str) else ""
