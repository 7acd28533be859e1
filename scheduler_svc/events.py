"""What the scheduler core tells a request's session: small typed domain events.

The core emits these; the service edge (`event_render.py`) renders them as the public API's
`ServerEvent` messages, and the simulator reads them as they are. Each names the request it
belongs to (the core's integer id, not the public one).

One session sees, in order: Accepted, then TokenDelta / Intercepted / Resumed as they happen,
then exactly one Finished (unless the server ends the session with an error status instead).
An iteration's tokens come as one TokenDeltas for all sessions (`session_events` splits it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

from scheduler_svc.policies.base import PauseAction
from scheduler_svc.request import FinishReason


@dataclasses.dataclass(frozen=True, slots=True)
class Accepted:
    request_id: int
    num_prompt_tokens: int
    seed: int  # the effective sampling seed (chosen by the server if the client gave none)


@dataclasses.dataclass(frozen=True, slots=True)
class TokenDelta:
    """Tokens appended to one request's output in one iteration."""

    request_id: int
    token_ids: tuple[int, ...]
    text: str  # the text they complete ("" if no character completed)


@dataclasses.dataclass(frozen=True, slots=True)
class TokenDeltas:
    """Every token one iteration appended, one per sampling request, in the plan's order:
    batched, so that an iteration builds no object per request; the step loop splits it into
    each session's TokenDelta. It comes before the iteration's other events (a session sees its
    token before the Finished or Intercepted it caused)."""

    request_ids: list[int]
    token_ids: list[int]  # token_ids[i] was appended to request_ids[i]
    texts: list[str]  # the text token_ids[i] completes

    def split(self) -> Iterator[TokenDelta]:
        """One TokenDelta per request."""
        for request_id, token_id, text in zip(self.request_ids, self.token_ids, self.texts, strict=True):
            yield TokenDelta(request_id, (token_id,), text)


@dataclasses.dataclass(frozen=True, slots=True)
class Intercepted:
    request_id: int
    tool: str
    call_text: str
    arguments: str  # the call's JSON object (<tool_call>) or its text
    num_context_tokens: int  # the context's length at the pause, tokens
    index: int  # 0 for the request's first interception
    context_action: PauseAction  # what was done with the KV context at the pause


@dataclasses.dataclass(frozen=True, slots=True)
class Resumed:
    request_id: int
    num_returned_tokens: int
    num_device_blocks_kept: int  # context blocks still on the device at the resume
    num_blocks_swapped_in: int  # context blocks to bring back from host memory
    num_recomputed_tokens: int  # computed context tokens that must be computed again


@dataclasses.dataclass(frozen=True, slots=True)
class Usage:
    """A finished request's token counts."""

    prompt_tokens: int
    generated_tokens: int
    returned_tokens: int
    recomputed_tokens: int
    interceptions: int


@dataclasses.dataclass(frozen=True, slots=True)
class Finished:
    request_id: int
    reason: FinishReason
    usage: Usage


SessionEvent = Accepted | TokenDelta | Intercepted | Resumed | Finished  # what one session receives
Event = SessionEvent | TokenDeltas


def session_events(events: Iterable[Event]) -> Iterator[SessionEvent]:
    """`events` with every TokenDeltas split into its sessions' TokenDelta, order kept."""
    for event in events:
        if isinstance(event, TokenDeltas):
            yield from event.split()
        else:
            yield event
