"""Turning a model name (a built-in name or a directory) into weights on the device."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from executor_svc.checkpoint import CheckpointError, read_config, read_state_dict
from executor_svc.model import LlamaForCausalLM, RotaryEmbedding
from executor_svc.model_config import LlamaConfig
from executor_svc.random_model import ensure_tiny_model
from executor_svc.smollm2 import ensure_smollm2_model

# Buffers some checkpoints carry that are recomputed here.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
# Built-in models by name, each made on first use in the cache: "default" is the real chat model
# (SmolLM2-135M-Instruct), "tiny" the small random-weight one for tests and load experiments.
BUILTIN_MODELS: dict[str, Callable[[], Path]] = {"default": ensure_smollm2_model, "tiny": ensure_tiny_model}


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    directory: Path
    config: LlamaConfig
    model: LlamaForCausalLM
    tokenizer_json: str  # "" if the directory has no tokenizer.json
    chat_template: str = ""  # Jinja source from tokenizer_config.json; "" if none
    chat_template_tokens: dict[str, str] = dataclasses.field(default_factory=dict)  # bos_token -> "<s>", ...


def resolve_model_dir(name: str) -> Path:
    if name in BUILTIN_MODELS:
        return BUILTIN_MODELS[name]()
    directory = Path(name).expanduser()
    if not directory.is_dir():
        raise CheckpointError(
            f"--model {name!r}: not a built-in model ({', '.join(BUILTIN_MODELS)}) and not a directory"
        )
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
    chat_template, tokens = read_chat_template(directory)
    return LoadedModel(directory, config, model, tokenizer_json, chat_template, tokens)


def read_chat_template(directory: Path) -> tuple[str, dict[str, str]]:
    """The chat template and its special tokens from tokenizer_config.json (or the separate
    chat_template.jinja newer checkpoints ship); ("", {}) if there is none."""
    config_path = directory / "tokenizer_config.json"
    config: dict[str, Any] = json.loads(config_path.read_text()) if config_path.is_file() else {}
    template = config.get("chat_template") or ""
    if isinstance(template, list):  # several named templates: the default one
        template = next((t["template"] for t in template if t.get("name") == "default"), "")
    jinja_path = directory / "chat_template.jinja"
    if not template and jinja_path.is_file():
        template = jinja_path.read_text()
    tokens = {}
    for name in ("bos_token", "eos_token", "unk_token", "pad_token"):
        value = config.get(name)
        if isinstance(value, dict):  # an AddedToken written out
            value = value.get("content")
        if isinstance(value, str):
            tokens[name] = value
    return template, tokens
