"""The gateway over a real stack, driven with the official `openai` package: chats, a tool-call
round trip that resumes the paused request, a diverged follow-up, an expired pause, bad requests."""

from __future__ import annotations

import time
from typing import Any, Protocol

import httpx
import openai
import pytest

from gateway.background import serve_in_thread
from gateway.config import GatewayConfig
from infercept import Client
from tests.gateway.resumption import assert_resumed_in_place, stats
from tooling.launcher import Stack

MODEL = "tiny"  # the stack of conftest.py
TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}
]


def script(*tools_after: tuple[str, int]) -> dict[str, Any]:
    """The `infercept` extension: scripted calls, token ids in the answer, no stop at eos."""
    calls = [{"after_tokens": n, "tool": tool} for tool, n in tools_after]
    return {"infercept": {"script": calls, "return_token_ids": True, "ignore_eos": True}}


def tool_turn(client: openai.OpenAI, messages: list[Any]) -> Any:
    """A turn that ends in a scripted `lookup` call after 6 tokens."""
    return client.chat.completions.create(
        model=MODEL,
        messages=messages,
        tools=TOOLS,
        max_tokens=16,
        temperature=0,
        extra_body=script(("lookup", 6)),
    )


def follow_up(messages: list[Any], answer: Any, result: str) -> list[Any]:
    """The conversation continued as an agent would: the assistant turn as returned (with its
    token ids), then the tool's result."""
    assistant = answer.choices[0].message.model_dump(exclude_none=True)
    call_id = assistant["tool_calls"][0]["id"]
    return [*messages, assistant, {"role": "tool", "tool_call_id": call_id, "content": result}]


def test_a_chat_answers_with_the_models_text_and_counts_its_tokens(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Hello"}],
        max_tokens=12,
        temperature=0,
        extra_body={"infercept": {"ignore_eos": True}},
    )
    assert answer.choices[0].finish_reason == "length"
    assert answer.choices[0].message.content
    assert answer.usage is not None and answer.usage.completion_tokens == 12
    assert answer.usage.prompt_tokens > 0


def test_a_streamed_chat_delivers_the_text_of_the_same_request_unstreamed(client: openai.OpenAI) -> None:
    request: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Stream"}],
        "max_tokens": 10,
        "temperature": 0,
        "extra_body": {"infercept": {"ignore_eos": True}},
    }
    whole = client.chat.completions.create(**request)
    chunks = list(
        client.chat.completions.create(**request, stream=True, stream_options={"include_usage": True})
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 10


def test_a_tool_call_round_trip_resumes_the_paused_request_and_answers_as_a_fresh_request(
    client: openai.OpenAI, gateway_url: str
) -> None:
    messages: list[Any] = [{"role": "user", "content": "Where is the Louvre?"}]
    first = tool_turn(client, messages)
    assert first.choices[0].finish_reason == "tool_calls"
    (call,) = first.choices[0].message.tool_calls or []
    assert call.function.name == "lookup" and call.function.arguments == "{}"
    assert first.usage is not None
    context_tokens = first.usage.prompt_tokens + first.usage.completion_tokens
    conversation = follow_up(messages, first, "Paris, France")
    before = stats(gateway_url)

    resumed = client.chat.completions.create(
        model=MODEL, messages=conversation, tools=TOOLS, max_tokens=12, temperature=0, extra_body=script()
    )
    after = stats(gateway_url)
    assert_resumed_in_place(before, after, resumed, context_tokens)

    fresh = client.chat.completions.create(
        model=MODEL, messages=conversation, tools=TOOLS, max_tokens=12, temperature=0, extra_body=script()
    )
    assert stats(gateway_url)["gateway"]["fresh_turns"] == after["gateway"]["fresh_turns"] + 1
    assert fresh.usage is not None and fresh.usage.prompt_tokens_details is not None
    assert fresh.usage.prompt_tokens_details.cached_tokens == 0
    assert resumed.choices[0].message.model_dump() == fresh.choices[0].message.model_dump()


def test_a_diverged_follow_up_starts_a_fresh_request_and_leaves_the_pause(
    client: openai.OpenAI, gateway_url: str
) -> None:
    messages: list[Any] = [{"role": "user", "content": "What is 6 times 7?"}]
    first = tool_turn(client, messages)
    diverged = follow_up([{"role": "user", "content": "What is 6 times 8?"}], first, "42")
    before = stats(gateway_url)
    answer = client.chat.completions.create(
        model=MODEL, messages=diverged, tools=TOOLS, max_tokens=8, temperature=0, extra_body=script()
    )
    after = stats(gateway_url)
    assert answer.choices[0].finish_reason == "length"
    assert after["gateway"]["fresh_turns"] == before["gateway"]["fresh_turns"] + 1
    assert after["gateway"]["resumed_turns"] == before["gateway"]["resumed_turns"]
    assert after["gateway"]["paused_turns"] == before["gateway"]["paused_turns"] >= 1
    again = client.chat.completions.create(
        model=MODEL, messages=diverged, tools=TOOLS, max_tokens=8, temperature=0, extra_body=script()
    )
    assert again.choices[0].message.content == answer.choices[0].message.content


def test_a_pause_nobody_continues_is_released_after_its_ttl(stack: Stack) -> None:
    config = GatewayConfig(scheduler_address=stack.scheduler_address, pause_ttl_s=0.5)
    with serve_in_thread(config) as url, openai.OpenAI(base_url=f"{url}/v1", api_key="-", max_retries=0) as c:
        before = stats(url)["scheduler"]
        answer = tool_turn(c, [{"role": "user", "content": "Wait for me"}])
        assert answer.choices[0].finish_reason == "tool_calls"
        # Wait for both sides: another test's closing session may add an abort of its own first.
        deadline_s = time.monotonic() + 30.0
        while not (
            (now := stats(url))["gateway"]["expired_pauses"] >= 1
            and now["scheduler"]["aborted_requests"] > before["aborted_requests"]
        ):
            assert time.monotonic() < deadline_s, "the paused request was not released"
            time.sleep(0.1)
        assert now["gateway"]["expired_pauses"] == 1 and now["gateway"]["paused_turns"] == 0
        # Other tests' pauses may still hold blocks; this one's are free again.
        assert now["scheduler"]["requests_by_state"]["paused"] <= before["requests_by_state"]["paused"]
        assert now["scheduler"]["device_blocks_free"] >= before["device_blocks_free"]


class JsonResponse(Protocol):
    """An HTTP response with a JSON body: httpx's, or the one openai's errors carry."""

    def json(self) -> Any: ...


def error_of(response: JsonResponse) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_an_unknown_model_is_a_404_in_openais_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.code == "model_not_found"
    assert error_of(raised.value.response)["param"] == "model"


def test_an_unknown_path_is_a_404_in_openais_shape(gateway_url: str) -> None:
    response = httpx.get(f"{gateway_url}/v1/nothing-here")
    assert response.status_code == 404
    error_of(response)


def test_a_body_that_is_not_json_is_a_400(gateway_url: str) -> None:
    response = httpx.post(
        f"{gateway_url}/v1/chat/completions",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_json"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 2}, "n"),
        ({"temperature": -1}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"top_p": 0}, "top_p"),
        ({"tools": TOOLS, "tool_choice": "required"}, "tool_choice"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
    ],
)
def test_bad_parameters_are_a_400_naming_the_parameter(
    gateway_url: str, fields: dict[str, Any], param: str
) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **fields}
    response = httpx.post(f"{gateway_url}/v1/chat/completions", json=body)
    assert response.status_code == 400
    error = error_of(response)
    assert error["param"] == param and error["type"] == "invalid_request_error"


def test_a_prompt_over_the_model_length_is_a_400_context_length_exceeded(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.completions.create(model=MODEL, prompt="x" * 5000, max_tokens=4)
    assert raised.value.code == "context_length_exceeded"


def test_a_completion_answers_a_text_prompt(client: openai.OpenAI) -> None:
    answer = client.completions.create(
        model=MODEL,
        prompt="Once upon a time",
        max_tokens=7,
        temperature=0,
        extra_body={"infercept": {"ignore_eos": True}},
    )
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None and answer.usage.completion_tokens == 7


def test_the_scheduler_hands_out_the_models_tokenizer_and_its_lack_of_a_template(stack: Stack) -> None:
    with Client(stack.scheduler_address) as scheduler:
        info = scheduler.server_info()
    assert '"model"' in info.tokenizer_json  # tokenizer.json text
    assert info.chat_template == ""  # tiny has none: the gateway uses its ChatML fallback


def test_a_follow_up_that_sends_back_only_the_text_resumes_when_the_text_retokenizes_exactly(
    client: openai.OpenAI, gateway_url: str
) -> None:
    # As agent frameworks do: the assistant turn goes back as text. The random model's output is
    # arbitrary bytes, so pick a question whose first two greedy tokens are ASCII (they survive
    # decoding and encoding again); a plain request shows them without pausing anything.
    def first_two_ids(question: str) -> list[int]:
        probe = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": question}],
            max_tokens=2,
            temperature=0,
            extra_body={"infercept": {"return_token_ids": True, "ignore_eos": True}},
        )
        ids: list[int] = (probe.choices[0].message.model_extra or {})["infercept"]["token_ids"]
        return ids

    question = next(
        q for q in (f"Question {i}?" for i in range(40)) if all(i < 128 for i in first_two_ids(q))
    )
    messages: list[Any] = [{"role": "user", "content": question}]
    first = client.chat.completions.create(
        model=MODEL,
        messages=messages,
        max_tokens=8,
        temperature=0,
        extra_body={"infercept": {"script": [{"after_tokens": 2, "tool": "lookup"}], "ignore_eos": True}},
    )
    assert first.choices[0].finish_reason == "tool_calls"
    conversation = follow_up(messages, first, "Nothing found")
    assert "infercept" not in conversation[1]  # text only
    before = stats(gateway_url)["gateway"]
    resumed = client.chat.completions.create(
        model=MODEL,
        messages=conversation,
        max_tokens=6,
        temperature=0,
        extra_body={"infercept": {"ignore_eos": True}},
    )
    assert stats(gateway_url)["gateway"]["resumed_turns"] == before["resumed_turns"] + 1
    fresh = client.chat.completions.create(
        model=MODEL,
        messages=conversation,
        max_tokens=6,
        temperature=0,
        extra_body={"infercept": {"ignore_eos": True}},
    )
    assert resumed.choices[0].message.content == fresh.choices[0].message.content


def test_a_streamed_turn_that_ends_in_a_call_sends_the_call_as_a_tool_calls_delta(
    client: openai.OpenAI,
) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Stream a call"}],
            tools=TOOLS,
            max_tokens=16,
            temperature=0,
            stream=True,
            extra_body=script(("lookup", 5)),
        )
    )
    last = chunks[-1].choices[0]
    assert last.finish_reason == "tool_calls"
    assert last.delta.tool_calls is not None and last.delta.tool_calls[0].function is not None
    assert last.delta.tool_calls[0].function.name == "lookup"


def test_with_resume_off_a_tool_call_ends_the_request_and_the_follow_up_starts_afresh(stack: Stack) -> None:
    config = GatewayConfig(scheduler_address=stack.scheduler_address, is_resume_enabled=False)
    with serve_in_thread(config) as url, openai.OpenAI(base_url=f"{url}/v1", api_key="-", max_retries=0) as c:
        messages: list[Any] = [{"role": "user", "content": "No resume"}]
        first = tool_turn(c, messages)
        assert first.choices[0].finish_reason == "tool_calls"
        assert stats(url)["gateway"]["paused_turns"] == 0
        c.chat.completions.create(
            model=MODEL,
            messages=follow_up(messages, first, "x"),
            tools=TOOLS,
            max_tokens=4,
            temperature=0,
            extra_body=script(),
        )
        counters = stats(url)["gateway"]
    assert (counters["resumed_turns"], counters["fresh_turns"]) == (0, 2)


def test_a_seeded_sampled_continuation_is_the_same_resumed_or_fresh(client: openai.OpenAI) -> None:
    # The server seeds each draw by (seed, position): the same context gives the same tokens.
    sampling: dict[str, Any] = {"temperature": 0.9, "top_p": 0.95, "seed": 3}
    messages: list[Any] = [{"role": "user", "content": "Sample me"}]
    first = client.chat.completions.create(
        model=MODEL,
        messages=messages,
        tools=TOOLS,
        max_tokens=16,
        extra_body=script(("lookup", 6)),
        **sampling,
    )
    conversation = follow_up(messages, first, "sampled")
    answers = [
        client.chat.completions.create(
            model=MODEL, messages=conversation, tools=TOOLS, max_tokens=10, extra_body=script(), **sampling
        )
        for _ in range(2)
    ]
    assert [(a.model_extra or {})["infercept"]["resumed"] for a in answers] == [True, False]
    assert answers[0].choices[0].message.model_dump() == answers[1].choices[0].message.model_dump()
