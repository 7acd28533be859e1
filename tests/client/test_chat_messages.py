"""Requests given as OpenAI-style messages, and function tools described by JSON schemas."""

from __future__ import annotations

import json

import pytest

from infercept import Tool
from infercept.errors import InferceptError
from infercept.events import event_from_proto
from infercept.types import RequestSpec, chat_message
from infercept.v1 import generation_pb2 as pb


def test_an_assistant_message_with_tool_calls_keeps_them_with_json_arguments() -> None:
    message = chat_message(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "calc", "arguments": {"x": "1+1"}}},
                {"id": "c2", "type": "function", "function": {"name": "now", "arguments": "{}"}},
            ],
        }
    )
    assert (message.role, message.content) == ("assistant", "")
    calls = [(c.id, c.name, json.loads(c.arguments_json)) for c in message.tool_calls]
    assert calls == [("c1", "calc", {"x": "1+1"}), ("c2", "now", {})]
    tool = chat_message({"role": "tool", "tool_call_id": "c1", "name": "calc", "content": "2"})
    assert (tool.tool_call_id, tool.name, tool.content) == ("c1", "calc", "2")


def test_function_tools_travel_as_schemas_and_marker_tools_as_triggers() -> None:
    weather = Tool.function(
        "weather",
        lambda args: "sunny",
        description="Weather",
        parameters={"type": "object", "properties": {}},
    )
    calc = Tool("calc", "</calc>", lambda text: "2", opening_marker="<calc>")
    request = RequestSpec(tools=[weather, calc], messages=[{"role": "user", "content": "hi"}]).to_proto()
    assert [t.name for t in request.tools] == ["calc"]
    (schema,) = [json.loads(s) for s in request.tool_schemas_json]
    assert schema == {
        "type": "function",
        "function": {
            "name": "weather",
            "description": "Weather",
            "parameters": {"type": "object", "properties": {}},
        },
    }
    assert [(m.role, m.content) for m in request.messages] == [("user", "hi")]


def test_a_message_without_a_role_cannot_be_sent() -> None:
    with pytest.raises(InferceptError, match="cannot encode"):
        RequestSpec(messages=[{"content": "hi"}]).to_proto()


def test_a_tool_is_called_with_the_arguments_or_else_the_call_text() -> None:
    json_call = event_from_proto(
        pb.ServerEvent(intercepted=pb.Intercepted(tool="w", call_text="{...}", arguments="{}"))
    )
    old_server = event_from_proto(pb.ServerEvent(intercepted=pb.Intercepted(tool="c", call_text="1+1")))
    assert (json_call.tool_input, old_server.tool_input) == ("{}", "1+1")  # type: ignore[union-attr]
