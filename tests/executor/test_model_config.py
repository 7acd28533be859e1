from __future__ import annotations

import pytest

from executor_svc.model_config import LlamaConfig, ModelConfigError

BASE = {
    "model_type": "llama",
    "vocab_size": 300,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 512,
}


def test_rope_theta_is_read_from_both_layouts() -> None:
    assert LlamaConfig.from_hf_dict({**BASE, "rope_theta": 5e5}).rope_theta == 5e5  # transformers 4.x
    nested = {**BASE, "rope_parameters": {"rope_type": "default", "rope_theta": 1e6}}  # 5.x
    assert LlamaConfig.from_hf_dict(nested).rope_theta == 1e6
    assert LlamaConfig.from_hf_dict(BASE).rope_theta == 10000.0


def test_defaults_follow_hugging_face() -> None:
    config = LlamaConfig.from_hf_dict({**BASE, "eos_token_id": [1, 2]})
    assert config.num_key_value_heads == 4 and config.head_dim == 16
    assert config.eos_token_ids == (1, 2)


def test_round_trip_through_the_hf_dict() -> None:
    config = LlamaConfig.from_hf_dict(
        {**BASE, "num_key_value_heads": 2, "tie_word_embeddings": True, "eos_token_id": 3}
    )
    assert LlamaConfig.from_hf_dict(config.to_hf_dict()) == config


def test_a_sliding_window_shorter_than_the_context_caps_the_length() -> None:
    config = LlamaConfig.from_hf_dict({**BASE, "model_type": "mistral", "sliding_window": 128})
    assert config.max_position_embeddings == 128


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"model_type": "gpt2"}, "model_type"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"num_key_value_heads": 3}, "multiple"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope scaling"),
    ],
)
def test_unsupported_configs_are_refused_with_a_reason(override: dict[str, object], message: str) -> None:
    with pytest.raises(ModelConfigError, match=message):
        LlamaConfig.from_hf_dict({**BASE, **override})
