"""Tools the model may call: how a call is recognised, and the function that answers it."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeAlias

from infercept.v1 import generation_pb2 as pb

# A tool returns text (the server tokenizes it) or token ids (appended as they are).
ToolOutput: TypeAlias = str | Sequence[int]
ToolFn: TypeAlias = Callable[[str], ToolOutput | Awaitable[ToolOutput]]


@dataclasses.dataclass(frozen=True)
class Tool:
    """A tool the model calls by writing text. The server intercepts the request when the text
    generated since the last resume ends with `trigger` (a stop string), or its token ids end with
    `trigger` (a sequence of ids); the client then runs `fn(call_text)`, where call_text is what
    was generated after the last `opening_marker` (or since the last resume, without one) and
    before the trigger.

    `fn` returns a str or a list of token ids. Client takes sync functions only; AsyncClient takes
    sync functions (run in a worker thread) and async ones."""

    name: str
    trigger: str | Sequence[int]
    fn: ToolFn
    opening_marker: str = ""
    # Expected seconds per call: a hint for the server's waste model (0 = unknown).
    expected_duration_s: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.trigger, str):
            object.__setattr__(self, "trigger", tuple(self.trigger))

    @property
    def is_async(self) -> bool:
        """Whether fn is a coroutine function (or an object whose __call__ is one)."""
        call = getattr(self.fn, "__call__", None)  # noqa: B004 - the bound __call__ of a callable object
        return inspect.iscoroutinefunction(self.fn) or inspect.iscoroutinefunction(call)

    def to_proto(self) -> pb.ToolSpec:
        spec = pb.ToolSpec(
            name=self.name,
            opening_marker=self.opening_marker,
            expected_duration_s=self.expected_duration_s,
        )
        if isinstance(self.trigger, str):
            spec.stop_string = self.trigger
        else:
            spec.stop_token_ids.extend(self.trigger)
        return spec
