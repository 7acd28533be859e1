"""Llama-family model configuration, read from and written as a Hugging Face ``config.json``."""

from __future__ import annotations

import dataclasses
from typing import Any

SUPPORTED_MODEL_TYPES = ("llama", "mistral")


class ModelConfigError(ValueError):
    """A config.json this executor cannot serve (unknown architecture, unsupported option)."""


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """Shape and numerics of a Llama-style decoder (RMSNorm, RoPE, GQA, SwiGLU)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    model_type: str = "llama"
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    # dtype the checkpoint was saved in ("float32", "bfloat16", ...), if it says.
    torch_dtype: str | None = None

    def __post_init__(self) -> None:
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ModelConfigError(
                f"model_type {self.model_type!r} is not supported; expected one of {SUPPORTED_MODEL_TYPES}"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ModelConfigError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        if self.head_dim % 2:
            raise ModelConfigError(f"head_dim must be even for rotary embeddings: {self.head_dim}")

    @property
    def num_query_groups(self) -> int:
        """Query heads that share one key/value head."""
        return self.num_attention_heads // self.num_key_value_heads

    @classmethod
    def from_hf_dict(cls, raw: dict[str, Any]) -> LlamaConfig:
        """Read a Hugging Face config.json dict (transformers 4.x or 5.x layout)."""
        model_type = raw.get("model_type", "llama")
        if raw.get("hidden_act", "silu") != "silu":
            raise ModelConfigError(f"hidden_act {raw['hidden_act']!r} is not supported (silu)")
        _check_rope_type(raw)
        heads = int(raw["num_attention_heads"])
        max_len = int(raw.get("max_position_embeddings", 2048))
        # Attention here is full attention: a sliding window shorter than the context would change
        # the outputs, so the served length stops at the window.
        window = raw.get("sliding_window")
        if window is not None and int(window) < max_len:
            max_len = int(window)
        eos = raw.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (int(eos),))
        return cls(
            vocab_size=int(raw["vocab_size"]),
            hidden_size=int(raw["hidden_size"]),
            intermediate_size=int(raw["intermediate_size"]),
            num_hidden_layers=int(raw["num_hidden_layers"]),
            num_attention_heads=heads,
            num_key_value_heads=int(raw.get("num_key_value_heads") or heads),
            head_dim=int(raw.get("head_dim") or raw["hidden_size"] // heads),
            max_position_embeddings=max_len,
            rope_theta=_rope_theta(raw),
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-5)),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            attention_bias=bool(raw.get("attention_bias", False)),
            mlp_bias=bool(raw.get("mlp_bias", False)),
            model_type=model_type,
            bos_token_id=raw.get("bos_token_id"),
            eos_token_ids=eos_ids,
            torch_dtype=raw.get("torch_dtype") or raw.get("dtype"),
        )

    def to_hf_dict(self) -> dict[str, Any]:
        """A config.json dict that both transformers 4.x and 5.x read back to this config."""
        eos: int | list[int] | None = (
            self.eos_token_ids[0] if len(self.eos_token_ids) == 1 else list(self.eos_token_ids)
        ) or None
        return {
            "architectures": ["LlamaForCausalLM" if self.model_type == "llama" else "MistralForCausalLM"],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "max_position_embeddings": self.max_position_embeddings,
            "rope_theta": self.rope_theta,
            "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta},
            "rms_norm_eps": self.rms_norm_eps,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.attention_bias,
            "mlp_bias": self.mlp_bias,
            "hidden_act": "silu",
            "bos_token_id": self.bos_token_id,
            "eos_token_id": eos,
        } | ({"torch_dtype": self.torch_dtype} if self.torch_dtype else {})


def _rope_theta(raw: dict[str, Any]) -> float:
    # transformers 5.x nests the base under rope_parameters; 4.x keeps it at the top level.
    nested = raw.get("rope_parameters") or {}
    if "rope_theta" in nested:
        return float(nested["rope_theta"])
    return float(raw.get("rope_theta", 10000.0))


def _check_rope_type(raw: dict[str, Any]) -> None:
    scaling = raw.get("rope_parameters") or raw.get("rope_scaling") or {}
    rope_type = scaling.get("rope_type") or scaling.get("type") or "default"
    if rope_type != "default":
        raise ModelConfigError(
            f"rope scaling type {rope_type!r} is not supported yet; only plain rotary embeddings"
        )
