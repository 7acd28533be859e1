"""admit(): every refusal with its status code, and what an accepted request becomes."""

from __future__ import annotations

from typing import Any

import pytest

from executor_svc.byte_tokenizer import build_byte_tokenizer
from infercept.v1 import generation_pb2 as gen
from scheduler_svc.admission import (
    MAX_MARKER_CHARS,
    MAX_NAME_CHARS,
    MAX_SCRIPT_CALLS,
    MAX_STOP_STRINGS,
    MAX_STOP_TOKEN_IDS,
    MAX_TOOLS,
    PROMPT_BYTES_PER_TOKEN_BOUND,
    RequestError,
    admit,
    check_text_size,
)
from scheduler_svc.interception import ToolTrigger
from tests.scheduler.harness import executor_description

DESC = executor_description(max_model_len=16)  # vocabulary [0, 300)
TOKENIZER = build_byte_tokenizer()


def proto(**fields: Any) -> gen.GenerateRequest:
    fields.setdefault("prompt_token_ids", [1, 2, 3])
    fields.setdefault("sampling", gen.SamplingParams(max_tokens=4))
    return gen.GenerateRequest(**fields)


REFUSALS = [
    ("empty prompt", dict(prompt_token_ids=[]), "INVALID_ARGUMENT", "empty"),
    ("text and ids", dict(prompt="hi", prompt_token_ids=[1]), "INVALID_ARGUMENT", "not both"),
    ("prompt at max_model_len", dict(prompt_token_ids=[1] * 16), "OUT_OF_RANGE", "16 tokens"),
    ("prompt over max_model_len", dict(prompt_token_ids=[1] * 40), "OUT_OF_RANGE", "40 tokens"),
    ("token outside vocabulary", dict(prompt_token_ids=[1, 300]), "INVALID_ARGUMENT", "300"),
    ("max_tokens 0", dict(sampling=gen.SamplingParams(max_tokens=0)), "INVALID_ARGUMENT", "max_tokens"),
    (
        "negative temperature",
        dict(sampling=gen.SamplingParams(max_tokens=1, temperature=-0.5)),
        "INVALID_ARGUMENT",
        "temperature",
    ),
    (
        "infinite temperature",
        dict(sampling=gen.SamplingParams(max_tokens=1, temperature=float("inf"))),
        "INVALID_ARGUMENT",
        "temperature",
    ),
    ("top_p over 1", dict(sampling=gen.SamplingParams(max_tokens=1, top_p=1.5)), "INVALID_ARGUMENT", "top_p"),
    (
        "negative top_p",
        dict(sampling=gen.SamplingParams(max_tokens=1, top_p=-0.1)),
        "INVALID_ARGUMENT",
        "top_p",
    ),
    ("tool without trigger", dict(tools=[gen.ToolSpec(name="calc")]), "INVALID_ARGUMENT", "exactly one"),
    (
        "tool with both triggers",
        dict(tools=[gen.ToolSpec(name="calc", stop_string="x", stop_token_ids=[5])]),
        "INVALID_ARGUMENT",
        "exactly one",
    ),
    ("tool without name", dict(tools=[gen.ToolSpec(stop_token_ids=[5])]), "INVALID_ARGUMENT", "no name"),
    (
        "tool with negative duration",
        dict(tools=[gen.ToolSpec(name="t", stop_token_ids=[5], expected_duration_s=-1)]),
        "INVALID_ARGUMENT",
        "expected_duration_s",
    ),
    (
        "scripted call after 0 tokens",
        dict(script=[gen.ScriptedCall(after_tokens=0, tool="t")]),
        "INVALID_ARGUMENT",
        "after_tokens",
    ),
    (
        "scripted call without tool",
        dict(script=[gen.ScriptedCall(after_tokens=2)]),
        "INVALID_ARGUMENT",
        "tool",
    ),
    (
        "tool name too long",
        dict(tools=[gen.ToolSpec(name="t" * (MAX_NAME_CHARS + 1), stop_token_ids=[5])]),
        "INVALID_ARGUMENT",
        "a tool name has 129 characters",
    ),
    (
        "scripted tool name too long",
        dict(script=[gen.ScriptedCall(after_tokens=2, tool="t" * (MAX_NAME_CHARS + 1))]),
        "INVALID_ARGUMENT",
        "scripted tool name",
    ),
    (
        "too many tools",
        dict(tools=[gen.ToolSpec(name=f"t{i}", stop_token_ids=[5]) for i in range(MAX_TOOLS + 1)]),
        "INVALID_ARGUMENT",
        "tools",
    ),
    (
        "too many scripted calls",
        dict(script=[gen.ScriptedCall(after_tokens=1, tool="t")] * (MAX_SCRIPT_CALLS + 1)),
        "INVALID_ARGUMENT",
        "calls",
    ),
    (
        "too many stop strings",
        dict(sampling=gen.SamplingParams(max_tokens=1, stop=["x"] * (MAX_STOP_STRINGS + 1))),
        "INVALID_ARGUMENT",
        "sampling.stop",
    ),
    (
        "stop string too long",
        dict(sampling=gen.SamplingParams(max_tokens=1, stop=["x" * (MAX_MARKER_CHARS + 1)])),
        "INVALID_ARGUMENT",
        "a stop string",
    ),
    (
        "tool stop sequence too long",
        dict(tools=[gen.ToolSpec(name="t", stop_token_ids=[5] * (MAX_STOP_TOKEN_IDS + 1))]),
        "INVALID_ARGUMENT",
        "stop_token_ids",
    ),
    ("program id too long", dict(program_id="p" * (MAX_NAME_CHARS + 1)), "INVALID_ARGUMENT", "program id"),
    (
        "text far longer than the maximum length",
        dict(prompt="x" * (16 * PROMPT_BYTES_PER_TOKEN_BOUND + 1), prompt_token_ids=[]),
        "OUT_OF_RANGE",
        "bytes of text",
    ),
]


@pytest.mark.parametrize(
    ("fields", "code", "needle"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_refusals(fields: dict[str, Any], code: str, needle: str) -> None:
    with pytest.raises(RequestError) as caught:
        admit(proto(**fields), 1, 0.0, DESC, TOKENIZER)
    assert caught.value.code == code
    assert needle in caught.value.message


NEEDS_TOKENIZER = [
    ("text prompt", dict(prompt="hello", prompt_token_ids=[])),
    ("stop strings", dict(sampling=gen.SamplingParams(max_tokens=1, stop=["."]))),
    ("tool stop string", dict(tools=[gen.ToolSpec(name="calc", stop_string="</calc>")])),
]


@pytest.mark.parametrize("fields", [r[1] for r in NEEDS_TOKENIZER], ids=[r[0] for r in NEEDS_TOKENIZER])
def test_text_without_a_tokenizer_is_a_failed_precondition(fields: dict[str, Any]) -> None:
    with pytest.raises(RequestError) as caught:
        admit(proto(**fields), 1, 0.0, DESC, None)
    assert caught.value.code == "FAILED_PRECONDITION"
    # The same request is fine once the model has a tokenizer.
    admit(proto(**fields), 1, 0.0, DESC, TOKENIZER)


def test_longest_prompt_accepted_leaves_room_for_one_token() -> None:
    request = admit(proto(prompt_token_ids=[299] * 15), 7, 2.5, DESC, None)
    assert request.num_prompt_tokens == 15 and request.token_ids == [299] * 15
    assert request.request_id == 7 and request.arrival_s == 2.5
    assert request.segment_start == 15 and request.num_pending == 15


def test_text_prompt_is_encoded_and_fields_carry_over() -> None:
    request = admit(
        proto(
            prompt="añ",
            prompt_token_ids=[],
            sampling=gen.SamplingParams(max_tokens=3, temperature=0.7, top_k=5, seed=9, stop=["", "."]),
            tools=[
                gen.ToolSpec(name="calc", stop_string="</c>", opening_marker="<c>", expected_duration_s=2)
            ],
            script=[gen.ScriptedCall(after_tokens=2, tool="web", expected_duration_s=1.5)],
        ),
        1,
        0.0,
        DESC,
        TOKENIZER,
    )
    assert request.token_ids == list("añ".encode())
    sampling = request.sampling
    assert (sampling.max_tokens, sampling.top_k, sampling.seed, sampling.stop) == (3, 5, 9, (".",))
    assert sampling.top_p == 1.0  # 0 means disabled
    (tool,) = request.tools
    assert isinstance(tool, ToolTrigger)
    assert tool.opening_marker == "<c>" and tool.expected_duration_s == 2
    assert [(s.after_tokens, s.tool, s.expected_duration_s) for s in request.script] == [(2, "web", 1.5)]


def test_unset_seed_stays_unset() -> None:
    assert admit(proto(), 1, 0.0, DESC, None).sampling.seed is None


def test_a_text_at_the_size_bound_is_tokenized_and_then_measured_in_tokens() -> None:
    check_text_size("x" * 16 * PROMPT_BYTES_PER_TOKEN_BOUND, 16, "the prompt")  # not refused unread
    with pytest.raises(RequestError) as caught:
        admit(
            proto(prompt="x" * 16 * PROMPT_BYTES_PER_TOKEN_BOUND, prompt_token_ids=[]),
            1,
            0.0,
            DESC,
            TOKENIZER,
        )
    assert caught.value.code == "OUT_OF_RANGE" and "tokens" in caught.value.message


def test_the_size_bound_counts_utf8_bytes_not_characters() -> None:
    with pytest.raises(RequestError):
        check_text_size("é" * (PROMPT_BYTES_PER_TOKEN_BOUND // 2 + 1), 1, "the tool result")
