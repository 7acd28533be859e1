"""Streaming text that may contain a marker (a stop string, a tool call's opening marker) the
client must not see: release only what can no longer turn out to be part of one."""

from __future__ import annotations


def releasable_length(text: str, markers: tuple[str, ...]) -> int:
    """How many leading characters of `text` are safe to send: up to the first full occurrence
    of a marker, and short of a tail that could still grow into one."""
    end = len(text)
    for marker in markers:
        found = text.find(marker)
        if found != -1:
            end = min(end, found)
    for marker in markers:
        # The longest proper prefix of `marker` that `text[:end]` ends with is withheld.
        for size in range(min(len(marker) - 1, end), 0, -1):
            if text.endswith(marker[:size], 0, end):
                end -= size
                break
    return end
