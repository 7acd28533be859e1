"""Loading Hugging Face directories: single file, shards, tied weights, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from executor_svc.checkpoint import CheckpointError, read_config, read_state_dict, write_checkpoint
from executor_svc.loading import load_model, resolve_model_dir
from executor_svc.model_config import LlamaConfig
from executor_svc.random_model import random_state_dict, write_random_model

CONFIG = LlamaConfig(
    vocab_size=100,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    max_position_embeddings=64,
)


def test_sharded_and_single_file_load_the_same_tensors(tmp_path: Path) -> None:
    write_random_model(tmp_path / "single", CONFIG, seed=5)
    write_random_model(tmp_path / "sharded", CONFIG, seed=5, max_shard_bytes=8_000)
    assert len(list((tmp_path / "sharded").glob("model-*-of-*.safetensors"))) > 2
    single = read_state_dict(tmp_path / "single", torch.device("cpu"))
    sharded = read_state_dict(tmp_path / "sharded", torch.device("cpu"))
    assert single.keys() == sharded.keys()
    assert all(torch.equal(single[k], sharded[k]) for k in single)


def test_tied_checkpoint_has_no_lm_head_and_shares_the_embedding(tmp_path: Path) -> None:
    tied = LlamaConfig(**{**CONFIG.__dict__, "tie_word_embeddings": True})
    write_random_model(tmp_path, tied, seed=5)
    assert "lm_head.weight" not in read_state_dict(tmp_path, torch.device("cpu"))
    model = load_model(tmp_path, torch.device("cpu")).model
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        read_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(CONFIG.to_hf_dict()))
    with pytest.raises(CheckpointError, match="only safetensors"):
        read_state_dict(tmp_path, torch.device("cpu"))
    write_random_model(tmp_path, CONFIG, seed=1, max_shard_bytes=8_000)
    next(tmp_path.glob("model-00002-*.safetensors")).unlink()
    with pytest.raises(CheckpointError, match="is missing"):
        read_state_dict(tmp_path, torch.device("cpu"))
    with pytest.raises(CheckpointError, match="not a built-in model"):
        resolve_model_dir(str(tmp_path / "nowhere"))


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path: Path) -> None:
    state = random_state_dict(CONFIG, seed=0, init_std=0.1)
    del state["model.layers.1.mlp.up_proj.weight"]
    state["model.extra.weight"] = torch.zeros(2)
    write_checkpoint(tmp_path, CONFIG, state)
    with pytest.raises(CheckpointError, match=r"missing.*up_proj.*unexpected.*extra"):
        load_model(tmp_path, torch.device("cpu"))


def test_load_casts_to_the_requested_dtype(tmp_path: Path) -> None:
    write_random_model(tmp_path, CONFIG, seed=2)
    model = load_model(tmp_path, torch.device("cpu"), torch.bfloat16).model
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.rotary.cos.dtype == torch.float32
