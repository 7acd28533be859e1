"""Tool calls the model writes, in the Hermes/Qwen form, as OpenAI `tool_calls`.

    <tool_call>{"name": "lookup", "arguments": {"q": "Paris"}}</tool_call>

The scheduler intercepts when the generated text ends with CLOSING_MARKER and reports the text
after the last OPENING_MARKER as the call text; this module turns that text into a ToolCall. A
call text that is not a JSON object with a string "name" is not a tool call (the turn then ends
as plain text). Kept in one module so that it can later defer to the scheduler's own parser.
"""

from __future__ import annotations

import dataclasses
import json
import secrets

OPENING_MARKER = "<tool_call>"
CLOSING_MARKER = "</tool_call>"


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


def parse_tool_call(call_text: str) -> ToolCall | None:
    """The call in `call_text` (what the model wrote between the markers), or None if it is not
    a JSON object with a string "name" and, if present, an object (or JSON-object string) as
    "arguments"."""
    try:
        value = json.loads(call_text)
    except json.JSONDecodeError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not value["name"]:
        return None
    arguments = value.get("arguments", {})
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    if not isinstance(arguments, dict):
        return None
    return ToolCall(new_call_id(), value["name"], json.dumps(arguments, ensure_ascii=False))


def scripted_tool_call(tool: str) -> ToolCall:
    """The call reported for a synthetic (scripted) interception: the script's tool, no arguments."""
    return ToolCall(new_call_id(), tool, "{}")
