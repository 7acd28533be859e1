"""Converting a llama.cpp GGUF file of a Llama-architecture model into a Hugging Face directory.

The result is what ``transformers``' ``LlamaForCausalLM`` and this executor both load:

- ``config.json`` from the ``llama.*`` metadata;
- ``model.safetensors``: every tensor dequantized to float32 (``gguf.quants.dequantize``), renamed
  to the Hugging Face names, and the query/key projections un-permuted (llama.cpp reorders their
  rows from rotate-half to interleaved pairs for its RoPE kernel; see ``unpermute_rows``);
- ``tokenizer.json`` built with the ``tokenizers`` library from ``tokenizer.ggml.*`` (byte-level
  BPE: the vocabulary, the merges, the control tokens as special tokens, and the pre-tokenizer
  that ``tokenizer.ggml.pre`` names);
- ``tokenizer_config.json`` (chat template, special tokens) and ``generation_config.json``.

Only what the file holds is used: nothing is downloaded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf import GGUFReader, GGUFValueType
from gguf.quants import dequantize
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from executor_svc.checkpoint import write_checkpoint
from executor_svc.model_config import LlamaConfig

# llama.cpp's token types (llama_token_type): 3 marks control tokens, 4 user-defined ones.
_CONTROL_TOKEN = 3
_USER_DEFINED_TOKEN = 4
# GPT-2's split of text into words, before byte-level BPE.
_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

_LAYER_TENSORS = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GLOBAL_TENSORS = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}


class GGUFConversionError(ValueError):
    """The GGUF file holds something this converter does not handle; the message says what."""


def convert_gguf(gguf_path: Path, out_dir: Path) -> LlamaConfig:
    """Write the Hugging Face directory for `gguf_path` into `out_dir` (created; files overwritten).

    tokenizer.json is written last: its presence marks a complete directory.
    """
    reader = GGUFReader(gguf_path)
    metadata = _metadata(reader)
    if metadata.get("general.architecture") != "llama":
        raise GGUFConversionError(
            f"{gguf_path}: architecture {metadata.get('general.architecture')!r}; only 'llama' is supported"
        )
    has_output = any(tensor.name == "output.weight" for tensor in reader.tensors)
    config = _config(metadata, tie_word_embeddings=not has_output)
    state = _state_dict(reader, config)
    write_checkpoint(out_dir, config, state)
    tokenizer = build_tokenizer(metadata)
    special = _special_tokens(metadata)
    (out_dir / "tokenizer_config.json").write_text(json.dumps(_tokenizer_config(metadata, special), indent=2))
    (out_dir / "generation_config.json").write_text(json.dumps(_generation_config(config), indent=2))
    tokenizer.save(str(out_dir / "tokenizer.json"))
    return config


# ----- metadata -----


def _metadata(reader: GGUFReader) -> dict[str, Any]:
    """Every key-value field as a Python value (strings, numbers, lists)."""
    values: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or not field.types:
            continue
        if field.types[0] == GGUFValueType.ARRAY and len(field.types) > 1:
            values[key] = list(field.contents())
        else:
            values[key] = field.contents()
    return values


def _config(metadata: dict[str, Any], tie_word_embeddings: bool) -> LlamaConfig:
    hidden = int(metadata["llama.embedding_length"])
    heads = int(metadata["llama.attention.head_count"])
    head_dim = int(
        metadata.get("llama.attention.key_length")
        or metadata.get("llama.rope.dimension_count")
        or hidden // heads
    )
    bos = metadata.get("tokenizer.ggml.bos_token_id")
    eos = metadata.get("tokenizer.ggml.eos_token_id")
    return LlamaConfig(
        vocab_size=int(metadata.get("llama.vocab_size") or len(metadata["tokenizer.ggml.tokens"])),
        hidden_size=hidden,
        intermediate_size=int(metadata["llama.feed_forward_length"]),
        num_hidden_layers=int(metadata["llama.block_count"]),
        num_attention_heads=heads,
        num_key_value_heads=int(metadata.get("llama.attention.head_count_kv") or heads),
        head_dim=head_dim,
        max_position_embeddings=int(metadata["llama.context_length"]),
        rope_theta=float(metadata.get("llama.rope.freq_base", 10000.0)),
        # The file stores the epsilon as a float32; round it back to the decimal it was written from.
        rms_norm_eps=float(f"{float(metadata['llama.attention.layer_norm_rms_epsilon']):.6g}"),
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=None if bos is None else int(bos),
        eos_token_ids=() if eos is None else (int(eos),),
        torch_dtype="float32",
    )


# ----- weights -----


def _state_dict(reader: GGUFReader, config: LlamaConfig) -> dict[str, torch.Tensor]:
    """float32 tensors under Hugging Face names, q/k rows back in rotate-half order."""
    state: dict[str, torch.Tensor] = {}
    for tensor in reader.tensors:
        name = hf_tensor_name(tensor.name)
        # GGUF lists dimensions fastest-first; numpy (and torch) want them slowest-first.
        shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
        values = np.asarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32).reshape(shape)
        if name.endswith("self_attn.q_proj.weight"):
            values = unpermute_rows(values, config.num_attention_heads)
        elif name.endswith("self_attn.k_proj.weight"):
            values = unpermute_rows(values, config.num_key_value_heads)
        state[name] = torch.from_numpy(np.array(values, order="C"))  # a copy: the reader maps the file
    return state


def hf_tensor_name(gguf_name: str) -> str:
    """``blk.3.attn_q.weight`` -> ``model.layers.3.self_attn.q_proj.weight``, and the global ones."""
    base, _, suffix = gguf_name.rpartition(".")
    if match := re.fullmatch(r"blk\.(\d+)\.(\w+)", base):
        layer, part = match.groups()
        if part in _LAYER_TENSORS:
            return f"model.layers.{layer}.{_LAYER_TENSORS[part]}.{suffix}"
    elif base in _GLOBAL_TENSORS:
        return f"{_GLOBAL_TENSORS[base]}.{suffix}"
    raise GGUFConversionError(f"tensor {gguf_name!r} has no Hugging Face Llama counterpart")


def unpermute_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Undo llama.cpp's RoPE row permutation of a q or k projection, (heads * head_dim, hidden).

    Hugging Face rotates the two halves of each head (rows i and i + head_dim/2 form a pair);
    llama.cpp's converter interleaves them (rows 2i and 2i+1). Per head it wrote
    ``w.reshape(2, head_dim/2, hidden).swapaxes(0, 1)``; this reads it back.
    """
    rows = weight.shape[0]
    half = rows // num_heads // 2
    return weight.reshape(num_heads, half, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


# ----- tokenizer -----


def _byte_level(split: str | None) -> Callable[[], pre_tokenizers.PreTokenizer]:
    def build() -> pre_tokenizers.PreTokenizer:
        steps: list[pre_tokenizers.PreTokenizer] = []
        if split is not None:
            steps.append(pre_tokenizers.Split(Regex(split), behavior="isolated"))
        steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True))
        return pre_tokenizers.Sequence(steps)

    return build


# llama.cpp's pre-tokenizer names (tokenizer.ggml.pre) -> the split before byte-level BPE. "smollm"
# isolates every digit first (llama.cpp's LLAMA_VOCAB_PRE_TYPE_SMOLLM; the original tokenizer's
# Digits(individual_digits=True)), then splits as GPT-2 does.
_PRE_TOKENIZERS: dict[str, Callable[[], pre_tokenizers.PreTokenizer]] = {
    "gpt-2": _byte_level(None),
    "default": _byte_level(None),
    "smollm": _byte_level(r"\p{N}"),
}


def build_tokenizer(metadata: dict[str, Any]) -> Tokenizer:
    """The byte-level BPE tokenizer the ``tokenizer.ggml.*`` metadata describes."""
    kind = metadata.get("tokenizer.ggml.model")
    pre = metadata.get("tokenizer.ggml.pre", "default")
    if kind != "gpt2":
        raise GGUFConversionError(f"tokenizer model {kind!r}: only byte-level BPE ('gpt2') is supported")
    if pre not in _PRE_TOKENIZERS:
        raise GGUFConversionError(f"pre-tokenizer {pre!r} is not supported; known: {sorted(_PRE_TOKENIZERS)}")
    tokens: list[str] = metadata["tokenizer.ggml.tokens"]
    merges = [tuple(merge.split(" ", 1)) for merge in metadata["tokenizer.ggml.merges"]]
    vocab = {token: index for index, token in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tokenizer.pre_tokenizer = _PRE_TOKENIZERS[pre]()
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    types: list[int] = metadata.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    # Control tokens (<|im_start|>, ...) are matched whole and skipped when decoding with
    # skip_special_tokens; user-defined ones are matched whole and kept.
    tokenizer.add_special_tokens(
        [
            AddedToken(t, special=True, normalized=False)
            for t, k in zip(tokens, types, strict=True)
            if k == _CONTROL_TOKEN
        ]
    )
    tokenizer.add_tokens(
        [
            AddedToken(t, special=False, normalized=False)
            for t, k in zip(tokens, types, strict=True)
            if k == _USER_DEFINED_TOKEN
        ]
    )
    return tokenizer


def _special_tokens(metadata: dict[str, Any]) -> dict[str, str]:
    tokens: list[str] = metadata["tokenizer.ggml.tokens"]
    keys = {"bos_token": "bos", "eos_token": "eos", "unk_token": "unknown", "pad_token": "padding"}
    special = {}
    for name, key in keys.items():
        token_id = metadata.get(f"tokenizer.ggml.{key}_token_id")
        if token_id is not None:
            special[name] = tokens[int(token_id)]
    return special


def _tokenizer_config(metadata: dict[str, Any], special: dict[str, str]) -> dict[str, Any]:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": bool(metadata.get("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(metadata.get("tokenizer.ggml.add_eos_token", False)),
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(metadata["llama.context_length"]),
        **special,
    } | (
        {"chat_template": metadata["tokenizer.chat_template"]}
        if "tokenizer.chat_template" in metadata
        else {}
    )


def _generation_config(config: LlamaConfig) -> dict[str, Any]:
    eos = list(config.eos_token_ids)
    return {
        "bos_token_id": config.bos_token_id,
        "eos_token_id": eos[0] if len(eos) == 1 else eos,
        "do_sample": False,
    }
