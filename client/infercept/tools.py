"""Tools the model may call: how a call is recognised, and the function that answers it."""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeAlias

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

    A tool with a `schema` (see Tool.function) is a function the chat template describes to the
    model; the model calls it by writing <tool_call>{"name": ..., "arguments": {...}}</tool_call>,
    and `fn` gets the arguments as JSON text. Its trigger may be "" (no marker pair).

    `fn` returns a str or a list of token ids. Client takes sync functions only; AsyncClient takes
    sync functions (run in a worker thread) and async ones."""

    name: str
    trigger: str | Sequence[int]
    fn: ToolFn
    opening_marker: str = ""
    # Expected seconds per call: a hint for the server's waste model (0 = unknown).
    expected_duration_s: float = 0.0
    # OpenAI's function tool JSON schema, {"type": "function", "function": {"name", "description",
    # "parameters"}}; None for a tool called by its marker pair only.
    schema: Mapping[str, Any] | None = None

    @classmethod
    def function(
        cls,
        name: str,
        fn: ToolFn,
        *,
        description: str = "",
        parameters: Mapping[str, Any] | None = None,
        expected_duration_s: float = 0.0,
    ) -> Tool:
        """A function tool: described to the model by its JSON schema, called as <tool_call>."""
        function: dict[str, Any] = {"name": name, "description": description}
        function["parameters"] = dict(parameters or {"type": "object", "properties": {}})
        schema = {"type": "function", "function": function}
        return cls(name, "", fn, expected_duration_s=expected_duration_s, schema=schema)

    def schema_json(self) -> str:
        return json.dumps(self.schema)

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
