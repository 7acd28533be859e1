"""IncrementalDecoder: byte-level tokens, multi-byte characters split across tokens."""

from __future__ import annotations

import random

import pytest
from tokenizers import Tokenizer

from executor_svc.byte_tokenizer import EOS_ID, build_byte_tokenizer
from scheduler_svc.detokenizer import IncrementalDecoder

TEXT = "añb€c😀d 日本語 ok ✓ é\n🎉!"


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return build_byte_tokenizer()


def test_each_character_is_emitted_exactly_once(tokenizer: Tokenizer) -> None:
    token_ids = list(TEXT.encode("utf-8"))  # one token per byte
    assert tokenizer.encode(TEXT, add_special_tokens=False).ids == token_ids
    decoder = IncrementalDecoder(tokenizer)
    deltas = [decoder.push(token) for token in token_ids]
    assert "".join(deltas) == TEXT == decoder.text
    assert all("\ufffd" not in delta for delta in deltas)
    # Nothing shows while a character is incomplete; it shows whole with its last byte.
    euro = TEXT.index("€")
    euro_bytes = range(len(TEXT[:euro].encode()), len(TEXT[: euro + 1].encode()))
    assert [deltas[i] for i in euro_bytes] == ["", "", "€"]
    emoji_start = len(TEXT[: TEXT.index("😀")].encode())
    assert deltas[emoji_start : emoji_start + 4] == ["", "", "", "😀"]


def test_random_multibyte_text_round_trips(tokenizer: Tokenizer) -> None:
    rng = random.Random(7)
    alphabet = "aZ ,é ñ € ✓ 日 語 😀 🎉 \n"
    for _ in range(20):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))
        decoder = IncrementalDecoder(tokenizer)
        deltas = [decoder.push(b) for b in text.encode()]
        assert "".join(deltas) == text
        assert not any("\ufffd" in d for d in deltas)


def test_special_tokens_add_no_text(tokenizer: Tokenizer) -> None:
    decoder = IncrementalDecoder(tokenizer)
    assert decoder.push(ord("h")) == "h"
    assert decoder.push(EOS_ID) == ""
    assert decoder.push(ord("i")) == "i"
    assert decoder.text == "hi"


def test_without_a_tokenizer_there_is_no_text() -> None:
    decoder = IncrementalDecoder(None)
    assert decoder.push(65) == "" and decoder.text == ""
