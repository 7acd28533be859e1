"""What the scheduler core tells a request's session: small typed domain events.

The core emits these; the service edge (`event_render.py`) renders them as the public API's
`ServerEvent` messages, and the simulator reads them as they are. Each names the request it
belongs to (the core's integer id, not the public one).

One session sees, in order: Accepted, then TokenDelta / Intercepted / Resumed as they happen,
then exactly one Finished (unless the server ends the session with an error status instead).
"""

from __future__ import annotations

import dataclasses

from scheduler_svc.policies.base import PauseAction
from scheduler_svc.request import FinishReason


@dataclasses.dataclass(frozen=True, slots=True)
class Accepted:
    request_id: int
    num_prompt_tokens: int
    seed: int  # the effective sampling seed (chosen by the server if the client gave none)


@dataclasses.dataclass(frozen=True, slots=True)
class TokenDelta:
    """Tokens appended to the request's output in one iteration (or one resubmission)."""

    request_id: int
    token_ids: tuple[int, ...]
    text: str  # the text they complete ("" when nothing needs it or no character completed)


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


Event = Accepted | TokenDelta | Intercepted | Resumed | Finished
