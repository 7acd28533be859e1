"""Tool calls the model writes as JSON: the Hermes/Qwen ``<tool_call>...</tool_call>`` form.

Chat models trained for function calling (Hermes, Qwen 2/2.5/3, many fine-tunes) write a call as

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

The call is complete when the closing tag is written; it is a call only if what lies between the
tags is a JSON object with a string "name" and an object "arguments" (some models write
"parameters"): a malformed one is text, and generation goes on.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

from scheduler_svc.interception import ToolCall, ToolTrigger

OPENING_TAG = "<tool_call>"
CLOSING_TAG = "</tool_call>"
# Finds the text between the tags when the closing one is written.
_TAGS = ToolTrigger("tool_call", stop_string=CLOSING_TAG, opening_marker=OPENING_TAG)


def parse_tool_call(text: str) -> tuple[str, str] | None:
    """(name, arguments as JSON text) of a call's body, or None if it is not a well-formed call."""
    try:
        call = json.loads(text)
    except ValueError:
        return None
    if not isinstance(call, dict) or not isinstance(call.get("name"), str) or not call["name"]:
        return None
    arguments = call.get("arguments", call.get("parameters", {}))
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    return call["name"], json.dumps(arguments, ensure_ascii=False)


@dataclasses.dataclass(frozen=True)
class HermesToolCalls:
    """Intercepts at each well-formed <tool_call> JSON call, as the function it names."""

    expected_duration_s: float = 0.0
    stop_token_ids: tuple[int, ...] = ()

    def detect(self, segment_text: str, segment_ids: Sequence[int], new_text: str) -> ToolCall | None:
        body = _TAGS.match(segment_text, segment_ids, new_text)
        if body is None or OPENING_TAG not in segment_text:
            return None
        parsed = parse_tool_call(body.strip())
        return None if parsed is None else ToolCall(parsed[0], body, parsed[1])
