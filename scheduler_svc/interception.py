"""When a request is intercepted: tool triggers written by the model, and synthetic scripts."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True)
class ToolTrigger:
    """A tool the model may call; a call ends with `stop_string` or `stop_token_ids`."""

    name: str
    stop_string: str = ""
    stop_token_ids: tuple[int, ...] = ()
    opening_marker: str = ""
    expected_duration_s: float = 0.0

    def match(self, segment_text: str, segment_ids: Sequence[int], new_text: str) -> str | None:
        """The call text if the generated segment just completed this tool's trigger, else None.

        segment_text/ids: what was generated since the last resume (ids: at least the last
        len(stop_token_ids) of them); new_text: the part of the text the last token completed
        (a stop string is only looked for where it could end)."""
        if self.stop_token_ids:
            n = len(self.stop_token_ids)
            if tuple(segment_ids[-n:]) == self.stop_token_ids:
                return self._call_text(segment_text)
            return None
        if not new_text or not self.stop_string:
            return None
        search_from = max(len(segment_text) - len(new_text) - len(self.stop_string) + 1, 0)
        end = segment_text.find(self.stop_string, search_from)
        return None if end < 0 else self._call_text(segment_text[:end])

    def _call_text(self, text: str) -> str:
        if self.opening_marker and self.opening_marker in text:
            return text[text.rindex(self.opening_marker) + len(self.opening_marker) :]
        return text


@dataclasses.dataclass(frozen=True)
class ScriptedStop:
    """Intercept as `tool` after exactly `after_tokens` tokens generated since the last resume."""

    after_tokens: int
    tool: str
    expected_duration_s: float = 0.0


def find_stop_string(text: str, new_text: str, stops: tuple[str, ...]) -> bool:
    """Whether one of `stops` occurs in `text` ending within its last `new_text` characters."""
    for stop in stops:
        if stop and new_text and stop in text[max(len(text) - len(new_text) - len(stop) + 1, 0) :]:
            return True
    return False
