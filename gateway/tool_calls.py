"""Tool calls in OpenAI's terms, from the scheduler's interceptions.

The scheduler recognises the model's Hermes `<tool_call>{"name": ..., "arguments": ...}</tool_call>`
calls itself (scheduler_svc.tool_calls, enabled by the request's tool schemas) and reports each as
an Intercepted event with the function's name and its arguments as JSON text; a malformed call is
text to it, and generation goes on. This module only gives such a call an OpenAI id and shape.
"""

from __future__ import annotations

import dataclasses
import secrets

from infercept.events import Intercepted
from scheduler_svc.tool_calls import CLOSING_TAG, OPENING_TAG

__all__ = ["CLOSING_TAG", "OPENING_TAG", "ToolCall", "from_interception", "new_call_id"]


@dataclasses.dataclass(frozen=True)
class ToolCall:
    """One call of a function tool, in OpenAI's terms."""

    id: str  # "call_<random>", unique per call
    name: str
    # The arguments as a JSON object, serialized (OpenAI sends them as a string).
    arguments_json: str

    def to_openai(self) -> dict[str, object]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments_json},
        }


def new_call_id() -> str:
    """A fresh id for a tool call: "call_" and 24 random hex digits."""
    return f"call_{secrets.token_hex(12)}"


def from_interception(event: Intercepted) -> ToolCall:
    """The call an interception reports: the model's (its function and arguments, a JSON object)
    or a scripted one (the script's tool; the scheduler reports no arguments for it)."""
    return ToolCall(new_call_id(), event.tool, event.arguments or "{}")
