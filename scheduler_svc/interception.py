"""When a request is intercepted: tool triggers written by the model, and synthetic scripts."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol


@dataclasses.dataclass(frozen=True)
class ToolCall:
    """A call the model wrote: the tool, the call's text, and its arguments (the JSON object of a
    <tool_call> call; the call text itself for a marker pair)."""

    name: str
    call_text: str
    arguments: str


class CallDetector(Protocol):
    """Recognises a tool call the model just completed (ToolTrigger, tool_calls.HermesToolCalls)."""

    @property
    def stop_token_ids(self) -> tuple[int, ...]: ...

    @property
    def expected_duration_s(self) -> float: ...

    def detect(self, segment_text: str, segment_ids: Sequence[int], new_text: str) -> ToolCall | None:
        """The call if the segment generated since the last resume just completed one (arguments
        as in ToolTrigger.match)."""
        ...


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
        # A stop string that ends in the new text has its last character there: a cheap test first.
        if not new_text or not self.stop_string or self.stop_string[-1] not in new_text:
            return None
        search_from = max(len(segment_text) - len(new_text) - len(self.stop_string) + 1, 0)
        end = segment_text.find(self.stop_string, search_from)
        return None if end < 0 else self._call_text(segment_text[:end])

    def detect(self, segment_text: str, segment_ids: Sequence[int], new_text: str) -> ToolCall | None:
        call_text = self.match(segment_text, segment_ids, new_text)
        return None if call_text is None else ToolCall(self.name, call_text, call_text)

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
