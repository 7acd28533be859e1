"""Tool calls the model writes as <tool_call> JSON, and requests given as chat messages."""

from __future__ import annotations

import dataclasses
import json

import pytest

from executor_svc.byte_tokenizer import build_byte_tokenizer
from infercept.v1 import generation_pb2 as gen
from scheduler_svc.admission import RequestError
from scheduler_svc.tool_calls import HermesToolCalls, parse_tool_call
from tests.scheduler.harness import Harness, generate_request
from tests.scheduler.test_scheduler import text_rule

WEATHER = '{"name": "weather", "arguments": {"city": "Paris"}}'
SCHEMA = json.dumps({"type": "function", "function": {"name": "weather", "parameters": {}}})
TEMPLATE = (
    "{% for m in messages %}<{{ m.role }}>{{ m.content }}</{{ m.role }}>{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (WEATHER, ("weather", '{"city": "Paris"}')),
        ('{"name": "now", "parameters": {}}', ("now", "{}")),
        ('{"name": "calc", "arguments": "{\\"x\\": 1}"}', ("calc", '{"x": 1}')),
        ('{"name": "calc"}', ("calc", "{}")),
        ('{"name": "calc", "arguments": {"x": 1}', None),  # unbalanced
        ('{"arguments": {}}', None),  # no name
        ('["weather"]', None),
        ('{"name": "calc", "arguments": [1]}', None),
    ],
)
def test_a_call_is_a_json_object_with_a_name_and_object_arguments(
    body: str, expected: tuple[str, str] | None
) -> None:
    assert parse_tool_call(body) == expected


def test_the_call_completes_at_the_closing_tag_and_only_then() -> None:
    detector = HermesToolCalls()
    text = f"Let me check.\n<tool_call>\n{WEATHER}\n</tool_call>"
    assert detector.detect(text[:-3], [], text[-6:-3]) is None
    call = detector.detect(text, [], text[-3:])
    assert call is not None and (call.name, call.arguments) == ("weather", '{"city": "Paris"}')
    assert detector.detect("</tool_call>", [], "</tool_call>") is None  # no opening tag: text


def test_the_scheduler_intercepts_a_tool_call_as_the_function_it_names() -> None:
    text = f"<tool_call>{{bad json}}</tool_call> then <tool_call>{WEATHER}</tool_call> sunny"
    h = Harness("preserve", rule=text_rule(3, text), tokenizer=build_byte_tokenizer())
    proto = generate_request([1, 2, 3], max_tokens=len(text) + 4)
    proto.tool_schemas_json.append(SCHEMA)
    rid = h.add(proto)
    call = h.run_until_paused(rid)  # the malformed call was text: generation went on past it
    assert (call.tool, call.arguments, call.call_text) == ("weather", '{"city": "Paris"}', WEATHER)
    assert h.text(rid) == text[: text.index("</tool_call> sunny") + len("</tool_call>")]


def chat_harness(prompt: str, text: str) -> Harness:
    """A harness whose model has TEMPLATE and writes `text` after the rendered `prompt`."""
    h = Harness("preserve", rule=text_rule(len(prompt), text), tokenizer=build_byte_tokenizer())
    h.scheduler.executor = dataclasses.replace(h.scheduler.executor, chat_template=TEMPLATE)
    return h


def test_messages_are_rendered_and_a_text_result_comes_back_as_the_tool_turn() -> None:
    prompt = "<user>2*3?</user><assistant>"
    h = chat_harness(prompt, "<calc>2*3</calc>six")
    proto = gen.GenerateRequest(
        messages=[gen.ChatMessage(role="user", content="2*3?")], sampling=gen.SamplingParams(max_tokens=30)
    )
    proto.tools.add(name="calc", stop_string="</calc>", opening_marker="<calc>")
    rid = h.add(proto)
    assert h.scheduler.requests[rid].token_ids == list(prompt.encode())
    call = h.run_until_paused(rid)
    assert (call.tool, call.arguments) == ("calc", "2*3")
    turn = h.scheduler.tool_result_text(rid, "6")
    assert turn == "</assistant><tool>6</tool><assistant>"
    conversation = h.scheduler.requests[rid].chat
    assert conversation is not None and conversation.messages[-2:] == [
        {"role": "assistant", "content": "<calc>2*3</calc>"},
        {"role": "tool", "content": "6"},
    ]


@pytest.mark.parametrize(
    ("change", "code", "reason"),
    [
        (lambda p: setattr(p, "prompt", "also text"), "INVALID_ARGUMENT", "not both"),
        (lambda p: p.tool_schemas_json.append("{not json"), "INVALID_ARGUMENT", "not valid JSON"),
        (lambda p: p.tool_schemas_json.append("[1]"), "INVALID_ARGUMENT", "must be a JSON object"),
        (lambda p: p.messages.add(role="", content="x"), "INVALID_ARGUMENT", "no role"),
    ],
)
def test_bad_messages_are_refused_with_a_reason(change: object, code: str, reason: str) -> None:
    h = chat_harness("", "x")
    proto = gen.GenerateRequest(
        messages=[gen.ChatMessage(role="user", content="hi")], sampling=gen.SamplingParams(max_tokens=3)
    )
    change(proto)  # type: ignore[operator]
    with pytest.raises(RequestError, match=reason) as raised:
        h.add(proto)
    assert raised.value.code == code


def test_messages_for_a_model_without_a_chat_template_are_a_failed_precondition() -> None:
    h = Harness("preserve", tokenizer=build_byte_tokenizer())
    proto = gen.GenerateRequest(
        messages=[gen.ChatMessage(role="user", content="hi")], sampling=gen.SamplingParams(max_tokens=3)
    )
    with pytest.raises(RequestError, match="no chat template") as raised:
        h.add(proto)
    assert raised.value.code == "FAILED_PRECONDITION"
