"""Seeded random Llama checkpoints, and the built-in ``tiny`` model made from one.

The tiny model (fast, random weights: for tests and load experiments) is created
deterministically on first use under the cache directory (see model_cache) as an ordinary
Hugging Face directory, so the executor and a ``transformers`` reference load the very same
files. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch

from executor_svc.byte_tokenizer import BOS_ID, EOS_ID, VOCAB_SIZE, build_byte_tokenizer
from executor_svc.checkpoint import write_checkpoint
from executor_svc.model import LlamaForCausalLM
from executor_svc.model_cache import cache_dir, ensure_cached_model
from executor_svc.model_config import LlamaConfig

# Bump the name whenever the config, the seed or the init below change: it keys the cache.
TINY_MODEL_NAME = "tiny-v1"
TINY_SEED = 0
# Large enough that greedy continuations differ from prompt to prompt (the project's floor is 0.1).
TINY_INIT_STD = 0.1
TINY_CONFIG = LlamaConfig(
    vocab_size=VOCAB_SIZE,
    hidden_size=256,
    intermediate_size=768,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=4,
    head_dim=32,
    max_position_embeddings=2048,
    rope_theta=10000.0,
    tie_word_embeddings=False,
    bos_token_id=BOS_ID,
    eos_token_ids=(EOS_ID,),
    torch_dtype="float32",
)


def random_state_dict(config: LlamaConfig, seed: int, init_std: float) -> dict[str, torch.Tensor]:
    """Float32 weights drawn from N(0, init_std²) (norm weights from N(1, init_std²)), in a fixed
    order from one seeded generator: the same arguments always give the same bytes."""
    generator = torch.Generator().manual_seed(seed)
    model = LlamaForCausalLM(config)
    state: dict[str, torch.Tensor] = {}
    for name, parameter in model.named_parameters():  # tied weights are listed once
        noise = torch.randn(parameter.shape, generator=generator) * init_std
        state[name] = noise + 1.0 if name.endswith("norm.weight") else noise
    return state


def write_random_model(
    model_dir: Path,
    config: LlamaConfig,
    seed: int,
    init_std: float = TINY_INIT_STD,
    max_shard_bytes: int | None = None,
) -> None:
    """A complete random checkpoint directory with the byte-level tokenizer."""
    write_checkpoint(model_dir, config, random_state_dict(config, seed, init_std), max_shard_bytes)
    build_byte_tokenizer().save(str(model_dir / "tokenizer.json"))


def ensure_tiny_model() -> Path:
    """The tiny model's directory, created on first use (safe against concurrent callers)."""
    return ensure_cached_model(
        TINY_MODEL_NAME, lambda staging: write_random_model(staging, TINY_CONFIG, TINY_SEED)
    )


__all__ = ["cache_dir", "ensure_tiny_model", "random_state_dict", "write_random_model"]
