"""Incremental decoding of generated tokens into text, one token at a time.

Decoding token by token breaks multi-byte characters, and decoding the whole output every step
is quadratic; the tokenizers library's DecodeStream keeps the short window that is needed and
emits a character once it is complete (invalid bytes become U+FFFD once they cannot complete).
"""

from __future__ import annotations

from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream


class IncrementalDecoder:
    def __init__(self, tokenizer: Tokenizer | None) -> None:
        self._tokenizer = tokenizer
        self._stream = DecodeStream(skip_special_tokens=True)
        self.text = ""  # everything emitted so far

    def push(self, token_id: int) -> str:
        """Add one token; return the text it completes (may be "")."""
        if self._tokenizer is None:
            return ""
        delta = self._stream.step(self._tokenizer, token_id) or ""
        self.text += delta
        return delta
