"""IncrementalDecoder: byte-level tokens, multi-byte characters split across tokens; the byte-table
path agrees with the tokenizers library's DecodeStream token by token."""

from __future__ import annotations

import random

import pytest
from tokenizers import Tokenizer, decoders, models
from tokenizers.decoders import DecodeStream

from executor_svc.byte_tokenizer import EOS_ID, build_byte_tokenizer
from scheduler_svc.detokenizer import IncrementalDecoder, _byte_alphabet, byte_table

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


def stream_deltas(tokenizer: Tokenizer, token_ids: list[int]) -> list[str]:
    """What the tokenizers library's DecodeStream emits per token (the reference)."""
    stream = DecodeStream(skip_special_tokens=True)
    return [stream.step(tokenizer, token_id) or "" for token_id in token_ids]


def test_the_byte_table_path_emits_what_decode_stream_does_token_by_token(tokenizer: Tokenizer) -> None:
    # Random bytes: incomplete, truncated and invalid UTF-8 sequences, special tokens between.
    assert byte_table(tokenizer) is not None
    rng = random.Random(11)
    valid = list("añ€😀 ok".encode())
    for _ in range(300):
        token_ids = [
            rng.choice((rng.randrange(256), rng.choice(valid), rng.choice(valid), EOS_ID))
            for _ in range(rng.randint(1, 30))
        ]
        decoder = IncrementalDecoder(tokenizer)
        assert [decoder.push(t) for t in token_ids] == stream_deltas(tokenizer, token_ids), token_ids


def test_a_multi_byte_vocabulary_and_added_tokens_decode_as_decode_stream_does() -> None:
    # Merged tokens (several bytes each, one a partial character) and a non-special added token.
    alphabet = _byte_alphabet()
    to_token = {byte: char for char, byte in alphabet.items()}
    vocab = {to_token[b]: b for b in range(256)}
    for word in ("hello", " world", "€", "日本"):
        vocab["".join(to_token[b] for b in word.encode())] = len(vocab)
    for partial in ("€".encode()[:2], b" " + "😀".encode()[:3]):  # a character's first bytes, after a space
        vocab["".join(to_token[b] for b in partial)] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.decoder = decoders.ByteLevel()
    tok.add_tokens(["<tool>"])
    tok.add_special_tokens(["</s>"])
    rng = random.Random(3)
    size = tok.get_vocab_size(with_added_tokens=True)
    for _ in range(200):
        token_ids = [rng.randrange(size) for _ in range(rng.randint(1, 20))]
        decoder = IncrementalDecoder(tok)
        assert [decoder.push(t) for t in token_ids] == stream_deltas(tok, token_ids), token_ids


def test_a_tokenizer_that_is_not_byte_level_decodes_with_decode_stream() -> None:
    tok = Tokenizer(models.WordLevel(vocab={"a": 0, "▁b": 1, "c": 2}, unk_token="a"))
    tok.decoder = decoders.Metaspace()
    assert byte_table(tok) is None
    decoder = IncrementalDecoder(tok)
    token_ids = [0, 1, 2, 1]
    assert [decoder.push(t) for t in token_ids] == stream_deltas(tok, token_ids)
