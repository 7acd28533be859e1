from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from executor_svc.model_config import LlamaConfig
from executor_svc.random_model import write_random_model


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A random checkpoint to test against, and the block size to serve it with."""

    name: str
    config: LlamaConfig
    block_size: int
    max_shard_bytes: int | None = None


SPECS = [
    # Grouped-query attention, a large rotary base, untied, a vocabulary that is not a power of two.
    ModelSpec(
        "gqa-untied",
        LlamaConfig(
            vocab_size=1000,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            max_position_embeddings=512,
            rope_theta=500000.0,
        ),
        block_size=4,
    ),
    # Multi-head attention, tied embeddings, biases on the projections.
    ModelSpec(
        "mha-tied-bias",
        LlamaConfig(
            vocab_size=517,
            hidden_size=96,
            intermediate_size=160,
            num_hidden_layers=3,
            num_attention_heads=6,
            num_key_value_heads=6,
            head_dim=16,
            max_position_embeddings=512,
            rope_theta=10000.0,
            tie_word_embeddings=True,
            attention_bias=True,
        ),
        block_size=8,
    ),
    # Mistral layout, one KV head, head_dim independent of hidden/heads, sharded weights.
    ModelSpec(
        "mistral-mqa-sharded",
        LlamaConfig(
            vocab_size=333,
            hidden_size=64,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=8,
            num_key_value_heads=1,
            head_dim=32,
            max_position_embeddings=512,
            rope_theta=1e6,
            model_type="mistral",
        ),
        block_size=16,
        max_shard_bytes=100_000,
    ),
]


@pytest.fixture(scope="session", params=SPECS, ids=[s.name for s in SPECS])
def model_spec(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[ModelSpec, Path]:
    spec: ModelSpec = request.param
    model_dir = tmp_path_factory.mktemp(spec.name)
    write_random_model(model_dir, spec.config, seed=1234, init_std=0.1, max_shard_bytes=spec.max_shard_bytes)
    return spec, model_dir


@pytest.fixture(autouse=True)
def _deterministic_threads() -> None:
    torch.set_num_threads(2)
