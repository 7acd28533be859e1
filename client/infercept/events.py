"""Typed server events of a Session stream, as `Client.stream` yields them."""

from __future__ import annotations

import dataclasses
from typing import TypeAlias

from infercept.v1 import generation_pb2 as pb


@dataclasses.dataclass(frozen=True)
class Usage:
    """Token counts of a finished request."""

    prompt_tokens: int = 0
    generated_tokens: int = 0
    # Tokens tools returned, appended to the context.
    returned_tokens: int = 0
    # Context tokens the server computed more than once (after discards and preemptions).
    recomputed_tokens: int = 0
    interceptions: int = 0

    @classmethod
    def from_proto(cls, message: pb.Usage) -> Usage:
        return cls(
            prompt_tokens=message.prompt_tokens,
            generated_tokens=message.generated_tokens,
            returned_tokens=message.returned_tokens,
            recomputed_tokens=message.recomputed_tokens,
            interceptions=message.interceptions,
        )


@dataclasses.dataclass(frozen=True)
class Accepted:
    """The server took the request."""

    request_id: str  # for abort() and logs
    num_prompt_tokens: int
    seed: int = 0  # what sampling is seeded with: the request's seed, or the server's choice


@dataclasses.dataclass(frozen=True)
class TokenDelta:
    """Newly generated tokens, in order."""

    token_ids: tuple[int, ...]
    # Their text; may be empty while a multi-byte character is incomplete.
    text: str


@dataclasses.dataclass(frozen=True)
class Intercepted:
    """The request paused for a tool call; the client answers it automatically."""

    tool: str
    # Generated text after the opening marker and before the trigger ("" for scripted calls).
    call_text: str
    num_context_tokens: int
    index: int  # 0 for the request's first interception, then 1, 2, ...
    # What the server first did with the paused context: "preserve", "discard" or "swap".
    context_action: str
    # The call's arguments: the JSON object of a <tool_call> call, the call text of a marker pair.
    arguments: str = ""

    @property
    def tool_input(self) -> str:
        """What the tool's fn is called with: the arguments (the call text from older servers)."""
        return self.arguments or self.call_text


@dataclasses.dataclass(frozen=True)
class Resumed:
    """Generation resumed after a tool result."""

    num_returned_tokens: int
    # How the paused context fared: blocks kept on the device, blocks swapped back in, tokens
    # recomputed because they had been discarded.
    num_device_blocks_kept: int
    num_blocks_swapped_in: int
    num_recomputed_tokens: int


@dataclasses.dataclass(frozen=True)
class Finished:
    """The request ended."""

    # "length" (max_tokens), "eos", "stop" (a stop string), "max_model_len", "abort".
    finish_reason: str
    usage: Usage


Event: TypeAlias = Accepted | TokenDelta | Intercepted | Resumed | Finished


def event_from_proto(message: pb.ServerEvent) -> Event | None:
    """The typed event, or None for a kind this client does not know (a newer server's)."""
    kind = message.WhichOneof("event")
    if kind == "accepted":
        a = message.accepted
        return Accepted(a.request_id, a.num_prompt_tokens, a.seed)
    if kind == "tokens":
        return TokenDelta(tuple(message.tokens.token_ids), message.tokens.text)
    if kind == "intercepted":
        m = message.intercepted
        return Intercepted(m.tool, m.call_text, m.num_context_tokens, m.index, m.context_action, m.arguments)
    if kind == "resumed":
        r = message.resumed
        return Resumed(
            r.num_returned_tokens, r.num_device_blocks_kept, r.num_blocks_swapped_in, r.num_recomputed_tokens
        )
    if kind == "finished":
        return Finished(message.finished.finish_reason, Usage.from_proto(message.finished.usage))
    return None
