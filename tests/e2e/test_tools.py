"""Interception by triggers the model writes itself, and real Python tools answering."""

from __future__ import annotations

import pytest
import torch

from executor_svc.random_model import ensure_tiny_model
from infercept import Client, SamplingParams, ScriptedCall, Tool
from tests.e2e.test_invariance import Spec, reference_loop
from tests.executor.reference import load_reference
from tooling.launcher import Stack

PROMPT = list(b"The agent thinks, then calls a tool: ")
GREEDY = SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True)


@pytest.fixture(scope="module")
def reference() -> torch.nn.Module:
    return load_reference(ensure_tiny_model())


@pytest.fixture(scope="module")
def greedy_tokens(reference: torch.nn.Module) -> list[int]:
    return reference_loop(reference, Spec(PROMPT, [], final_tokens=40))


def test_a_token_id_trigger_written_by_the_model_pauses_exactly_there(
    stack: Stack, reference: torch.nn.Module, greedy_tokens: list[int]
) -> None:
    trigger = greedy_tokens[6]
    pause_at = greedy_tokens.index(trigger) + 1  # tokens generated when the trigger first appears
    returned = [ord(c) for c in " result=7 "]
    seen: list[str] = []

    def tool(call_text: str) -> list[int]:
        seen.append(call_text)
        return returned

    with Client(stack.scheduler_address) as client:
        result = client.generate(
            prompt_token_ids=PROMPT, sampling=GREEDY, tools=[Tool("probe", [trigger], tool)]
        )
    first = result.interceptions[0]
    assert first.output_offset == pause_at, "paused right after the model wrote the trigger"
    assert result.output_token_ids[:pause_at] == greedy_tokens[:pause_at]
    assert len(seen) == len(result.interceptions) and first.context_action == "swap"
    assert result.output_token_ids == reference_with_trigger(reference, trigger, returned, GREEDY.max_tokens)


@torch.inference_mode()
def reference_with_trigger(
    model: torch.nn.Module, trigger: int, returned: list[int], max_tokens: int
) -> list[int]:
    """Greedy generation that appends `returned` after every `trigger` the model writes."""
    output: list[int] = []
    context = list(PROMPT)
    generated = 0
    while generated < max_tokens:
        token = int(model(torch.tensor([context])).logits[0, -1].argmax())
        generated += 1
        output.append(token)
        context.append(token)
        if token == trigger and generated < max_tokens:
            output += returned
            context += returned
    return output


def test_a_stop_string_written_by_the_model_pauses_with_the_call_text(
    stack: Stack, greedy_tokens: list[int]
) -> None:
    position = next(i for i, t in enumerate(greedy_tokens) if i >= 3 and 33 <= t <= 126)
    stop = chr(greedy_tokens[position])
    with Client(stack.scheduler_address) as client:
        result = client.generate(
            prompt_token_ids=PROMPT,
            sampling=SamplingParams(max_tokens=position + 5, temperature=0.0, ignore_eos=True),
            tools=[Tool("echo", stop, lambda call_text: "")],
        )
    pause = greedy_tokens.index(greedy_tokens[position]) + 1
    first = result.interceptions[0]
    assert first.output_offset == pause
    assert first.call_text == bytes(greedy_tokens[: pause - 1]).decode("utf-8", errors="replace")
    assert stop not in first.call_text


def test_a_scripted_pause_can_be_answered_by_a_real_tool(stack: Stack) -> None:
    def calculator(_: str) -> str:
        return str(12 * 34)

    with Client(stack.scheduler_address) as client:
        result = client.generate(
            prompt="Compute 12*34 with <calc>",
            sampling=SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True),
            tools=[Tool("calc", "</calc>", calculator)],
            script=[ScriptedCall(after_tokens=3, tool="calc", wait_s=0.05)],
        )
    (interception,) = result.interceptions
    assert interception.is_scripted and interception.returned_text == "408"
    assert interception.wait_s >= 0.05
    assert interception.resumed is not None and interception.resumed.num_returned_tokens == 3
    assert result.usage.returned_tokens == 3 and result.usage.generated_tokens == 10
