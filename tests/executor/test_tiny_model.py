"""The built-in tiny model: created deterministically on first use, byte-level tokenizer."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from executor_svc.random_model import TINY_MODEL_NAME, ensure_tiny_model


def _digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_created_on_first_use_and_identical_everywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFERCEPT_CACHE_DIR", str(tmp_path / "a"))
    first = ensure_tiny_model()
    assert first == tmp_path / "a" / "models" / TINY_MODEL_NAME
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in first.iterdir()}
    assert ensure_tiny_model() == first  # second use finds it
    monkeypatch.setenv("INFERCEPT_CACHE_DIR", str(tmp_path / "b"))
    assert _digest(ensure_tiny_model()) == _digest(first)


def test_tokenizer_is_byte_level_with_bos_and_eos() -> None:
    tokenizer = Tokenizer.from_file(str(ensure_tiny_model() / "tokenizer.json"))
    text = "naïve café: 2+2=4\n"
    ids = tokenizer.encode(text).ids
    assert ids == list(text.encode())
    assert tokenizer.decode(ids) == text
    assert (tokenizer.token_to_id("<s>"), tokenizer.token_to_id("</s>"), tokenizer.get_vocab_size()) == (
        256,
        257,
        258,
    )
