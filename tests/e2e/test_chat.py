"""The real chat model through the two-process stack and the client library: a conversation
given as messages, a calculator the model calls by writing <calc>...</calc>, its result appended
as the chat template's tool turn."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tokenizers import Tokenizer

from executor_svc.smollm2 import ensure_smollm2_model
from infercept import Client, SamplingParams, Tool
from tests.executor.test_smollm2 import CALC_MESSAGES, multiply
from tooling.launcher import Stack, launch


@pytest.fixture(scope="module")
def chat_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # The swap policy needs no cost model, so the scheduler starts without a profile.
    executor = [
        "--model",
        "default",
        "--device",
        "cpu",
        "--num-device-blocks",
        "32",
        "--num-host-blocks",
        "32",
    ]
    with launch(executor, ["--policy", "swap"], log_dir=tmp_path_factory.mktemp("chat")) as stack:
        yield stack


def test_the_model_calls_the_calculator_and_answers_with_its_result(chat_stack: Stack) -> None:
    tokenizer = Tokenizer.from_file(str(ensure_smollm2_model() / "tokenizer.json"))
    calls: list[str] = []

    def calc(expression: str) -> str:
        calls.append(expression)
        return multiply(expression)

    with Client(chat_stack.scheduler_address) as client:
        assert client.server_info().model == "default"
        result = client.generate(
            messages=CALC_MESSAGES,
            sampling=SamplingParams(max_tokens=24, temperature=0.0),
            tools=[Tool("calc", "</calc>", calc, opening_marker="<calc>")],
        )
    assert calls == ["12*34"] and result.finish_reason == "eos"
    (call,) = result.interceptions
    assert (call.tool, call.context_action, call.returned_text) == ("calc", "swap", "408")
    # The result went in as the tool turn: <|im_end|>, the tool message, the assistant header.
    tool_turn = tokenizer.encode("<|im_end|>\n<|im_start|>tool\n408<|im_end|>\n<|im_start|>assistant\n").ids
    assert call.resumed is not None and call.resumed.num_returned_tokens == len(tool_turn)
    before = tokenizer.decode(result.output_token_ids[: call.output_offset])
    answer = tokenizer.decode(result.output_token_ids[call.output_offset :])
    print(f"SmolLM2 wrote {before!r}, then after the calculator: {answer!r}")
    assert before == "<calc>12*34</calc>" and "408" in answer
