"""Incremental decoding of generated tokens into text, one token at a time.

Decoding token by token breaks multi-byte characters, and decoding the whole output every step
is quadratic. This keeps a short window: the text of the tokens since `prefix` is decoded, and
what goes beyond the already-emitted part is new, unless it ends in an incomplete character.
"""

from __future__ import annotations

from tokenizers import Tokenizer

_INCOMPLETE = "\ufffd"


class IncrementalDecoder:
    def __init__(self, tokenizer: Tokenizer | None) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix = 0  # first id of the decoding window
        self._read = 0  # ids before this are already emitted as text
        self.text = ""  # everything emitted so far

    def push(self, token_id: int) -> str:
        """Add one token; return the text it completes (may be "")."""
        if self._tokenizer is None:
            return ""
        self._ids.append(token_id)
        emitted = self._tokenizer.decode(self._ids[self._prefix : self._read])
        window = self._tokenizer.decode(self._ids[self._prefix :])
        if len(window) <= len(emitted) or window.endswith(_INCOMPLETE):
            return ""
        delta = window[len(emitted) :]
        self._prefix, self._read = self._read, len(self._ids)
        self.text += delta
        return delta
