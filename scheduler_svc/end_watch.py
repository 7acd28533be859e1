"""What can end or pause a request at a token, tested for every token at the cost of a set lookup.

Every finish or interception that a token's id or text causes needs a particular token or a
particular character in the text the token completes:

    eos                     the token is an eos id (unless the request ignores eos)
    a token-id trigger      the token is the trigger's last id
    a stop string           the stop string's last character is in the token's text
    a text trigger          the trigger's last character is in the token's text (also <tool_call>)

so a token that is none of these ends and pauses nothing by its id or text, and the exact checks
(`StepOutput`: a search of the decoded text per stop string and per tool) run only for the few
tokens that are. Length limits and scripted stops are counts, checked apart.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from scheduler_svc.interception import CallDetector


@dataclasses.dataclass(frozen=True, slots=True)
class EndWatch:
    token_ids: frozenset[int]  # eos (where it ends the request) and each token-id trigger's last id
    chars: frozenset[str]  # the last character of each stop string and of each text trigger

    @staticmethod
    def of(
        stop_strings: Iterable[str], tools: Iterable[CallDetector], eos_token_ids: Iterable[int]
    ) -> EndWatch:
        """The watch of a request with these stop strings and tools; `eos_token_ids`: the ids
        that end it (none if it ignores eos)."""
        token_ids, chars = set(eos_token_ids), {stop[-1] for stop in stop_strings if stop}
        for tool in tools:
            if tool.stop_token_ids:
                token_ids.add(tool.stop_token_ids[-1])
            if tool.stop_string:
                chars.add(tool.stop_string[-1])
        return EndWatch(frozenset(token_ids), frozenset(chars))

    def may_end(self, token_id: int, text: str) -> bool:
        """False if a token `token_id` completing `text` surely ends and pauses nothing by its id
        or its text (True: the exact checks decide)."""
        return token_id in self.token_ids or not self.chars.isdisjoint(text)
