"""The real default model (SmolLM2-135M-Instruct) through the gateway with the official `openai`
package: the model writes a calculator call, the turn ends with the request paused on the server,
and the follow-up that carries the tool's result resumes it (the paused context reused, nothing
prefilled or recomputed again) and answers exactly as a fresh request for the whole conversation.

The follow-up is what any OpenAI client sends (no `infercept` extension): the assistant's content
and tool call as returned, re-rendered by the gateway's tool-aware template and re-tokenized; that
it extends the paused context token for token is part of what is tested.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from gateway.background import serve_in_thread
from gateway.config import GatewayConfig
from gateway.demo import FEW_SHOT, TOOLS, calculator
from tests.gateway.resumption import assert_resumed_in_place, stats
from tooling.launcher import launch

MAX_TOKENS = 40  # the call turn writes about 30 tokens, the answer about 10


@pytest.fixture(scope="module")
def real_gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    executor = [
        "--model",
        "default",
        "--device",
        "cpu",
        "--num-device-blocks",
        "128",
        "--num-host-blocks",
        "16",
    ]
    logs: Path = tmp_path_factory.mktemp("real")
    with (
        # preserve keeps the paused context on the device and needs no cost profile at start.
        launch(executor, ["--policy", "preserve"], log_dir=logs) as stack,
        serve_in_thread(GatewayConfig(scheduler_address=stack.scheduler_address, chat_template="")) as url,
    ):
        yield url


def test_the_real_models_call_pauses_and_the_follow_up_resumes_it_answering_as_a_fresh_request(
    real_gateway_url: str,
) -> None:
    with openai.OpenAI(
        base_url=f"{real_gateway_url}/v1", api_key="-", max_retries=0, timeout=120.0
    ) as client:
        ask: dict[str, Any] = {"model": "default", "tools": TOOLS, "max_tokens": MAX_TOKENS, "temperature": 0}
        messages: list[Any] = [*FEW_SHOT, {"role": "user", "content": "What is 12*34?"}]
        first = client.chat.completions.create(messages=messages, **ask)
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls", choice.message.content
        (call,) = choice.message.tool_calls or []
        # The scheduler's detector names the function (what its duration estimator sees too).
        assert (call.function.name, call.function.arguments) == ("calculator", '{"expression": "12*34"}')
        assert first.usage is not None
        context_tokens = first.usage.prompt_tokens + first.usage.completion_tokens
        assistant = choice.message.model_dump(exclude_none=True)
        conversation = [
            *messages,
            assistant,
            {
                "role": "tool",
                "tool_call_id": call.id,
                "content": calculator(**json.loads(call.function.arguments)),
            },
        ]
        before = stats(real_gateway_url)

        resumed = client.chat.completions.create(messages=conversation, **ask)
        # Nothing computed again: no prompt prefilled, no context recomputed, only the tool turn added.
        after = stats(real_gateway_url)
        assert_resumed_in_place(before, after, resumed, context_tokens)
        answer = resumed.choices[0].message.content or ""
        print(f"SmolLM2 answered {answer!r} after calculator({call.function.arguments})")
        assert "408" in answer and resumed.choices[0].finish_reason == "stop"

        fresh = client.chat.completions.create(messages=conversation, **ask)
        assert stats(real_gateway_url)["gateway"]["fresh_turns"] == after["gateway"]["fresh_turns"] + 1
        assert fresh.usage is not None and fresh.usage.prompt_tokens == resumed.usage.prompt_tokens
        assert fresh.choices[0].message.content == answer
