"""Incremental decoding of generated tokens into text, one token at a time.

Decoding token by token breaks multi-byte characters, and decoding the whole output every step
is quadratic; the tokenizers library's DecodeStream keeps the short window that is needed and
emits text once it does not end in U+FFFD (an incomplete or invalid character), so invalid bytes
become U+FFFD once something valid follows them.

DecodeStream costs a call into the library per token. For a byte-level tokenizer (a decoder that
is exactly `ByteLevel`: GPT-2, Llama 3, Qwen, SmolLM, the built-in byte model) every token stands
for a fixed byte string, so the same text comes from a table of those bytes and Python's
incremental UTF-8 decoder, holding text back under the same rule (also while the decoder holds
the first bytes of a character); other tokenizers use
DecodeStream. The two agree token by token (tests/scheduler/test_detokenizer.py).
"""

from __future__ import annotations

import codecs
import dataclasses

from tokenizers import Tokenizer
from tokenizers.decoders import ByteLevel, DecodeStream

REPLACEMENT = "\ufffd"


@dataclasses.dataclass(frozen=True)
class ByteTable:
    """What each token id decodes to with skip_special_tokens (special tokens: nothing)."""

    raw: list[bytes]
    # The text of a token that is whole characters on its own (and does not end in U+FFFD),
    # else None: such a token, with nothing held, is emitted as it is.
    text: list[str | None]


# Byte tables by tokenizer, built once per tokenizer (the tokenizer is kept so its id stays its own).
_TABLES: dict[int, tuple[Tokenizer, ByteTable | None]] = {}


def _byte_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet, character -> byte: printable Latin-1 bytes stand for
    themselves, the other bytes for the characters from U+0100 on, in byte order."""
    printable = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    others = (b for b in range(256) if b not in printable)
    alphabet = {chr(b): b for b in printable}
    alphabet.update({chr(0x100 + n): b for n, b in enumerate(others)})
    return alphabet


def byte_table(tokenizer: Tokenizer) -> ByteTable | None:
    """The bytes each token id decodes to with skip_special_tokens (special tokens: none), or
    None if the tokenizer's decoder is not plain ByteLevel. A token whose characters are not all
    in the alphabet stands for its own UTF-8 bytes, as the ByteLevel decoder does."""
    cached = _TABLES.get(id(tokenizer))
    if cached is not None and cached[0] is tokenizer:
        return cached[1]
    table: ByteTable | None = None
    if isinstance(tokenizer.decoder, ByteLevel):
        alphabet = _byte_alphabet()
        raw = [b""] * tokenizer.get_vocab_size(with_added_tokens=True)
        for token, token_id in tokenizer.get_vocab(with_added_tokens=True).items():
            if all(c in alphabet for c in token):
                raw[token_id] = bytes(alphabet[c] for c in token)
            else:
                raw[token_id] = token.encode()
        for token_id, added in tokenizer.get_added_tokens_decoder().items():
            if added.special:
                raw[token_id] = b""
        table = ByteTable(raw, [_whole_text(data) for data in raw])
    _TABLES[id(tokenizer)] = (tokenizer, table)
    return table


def _whole_text(data: bytes) -> str | None:
    """`data` as text if it is whole characters not ending in U+FFFD, else None."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return None
    return None if text.endswith(REPLACEMENT) else text


class IncrementalDecoder:
    def __init__(self, tokenizer: Tokenizer | None) -> None:
        self._tokenizer = tokenizer
        self._table = None if tokenizer is None else byte_table(tokenizer)
        self._stream = DecodeStream(skip_special_tokens=True)
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self._held = ""  # decoded text not emitted yet: it ends in U+FFFD or an incomplete character
        self._is_clean = True  # the UTF-8 decoder holds no first bytes of a character
        self.text = ""  # everything emitted so far

    def push(self, token_id: int) -> str:
        """Add one token; return the text it completes (may be "")."""
        table = self._table
        if table is not None:
            if token_id >= len(table.raw):  # out of the vocabulary: DecodeStream would fail; emit nothing
                return ""
            text = table.text[token_id]
            if text is not None and not self._held and self._is_clean:
                self.text += text  # the common case: whole characters, nothing held
                return text
            return self._push_bytes(table.raw[token_id])
        if self._tokenizer is None:
            return ""
        delta = self._stream.step(self._tokenizer, token_id) or ""
        self.text += delta
        return delta

    def _push_bytes(self, data: bytes) -> str:
        utf8 = self._utf8
        held = self._held + utf8.decode(data)
        self._is_clean = not utf8.getstate()[0]
        # An incomplete character at the end holds back everything before it, as DecodeStream
        # (whose window would end in U+FFFD) does.
        if not held or held[-1] == REPLACEMENT or not self._is_clean:
            self._held = held
            return ""
        self._held = ""
        self.text += held
        return held
