"""The executor killed (idle, computing, with every request paused) or hung: the scheduler tells
the truth in its health, rebuilds every request on the restarted executor, and frees everything."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from infercept import NO_RESUME, Client, InferceptError, ResumePolicy, SamplingParams, ScriptedCall, Tool
from infercept.result import GenerateResult
from tests.e2e.chaos import WAIT_S, ChaosStack, chaos_stack, wait_for

PROMPT = list(range(30, 70))
GREEDY = SamplingParams(max_tokens=60, temperature=0.0, ignore_eos=True)
SAMPLED = SamplingParams(max_tokens=60, temperature=0.8, seed=7, ignore_eos=True)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosStack]:
    with chaos_stack(
        tmp_path_factory.mktemp("faults"), scheduler_flags=["--outage-timeout", "60"]
    ) as running:
        yield running


def generate(
    stack: ChaosStack,
    sampling: SamplingParams,
    script: Sequence[ScriptedCall] = (),
    tools: Sequence[Tool] = (),
    resume: ResumePolicy = NO_RESUME,
) -> GenerateResult:
    """The request's result; a broken stream is not resumed unless `resume` says so."""
    with Client(stack.scheduler_address, resume=resume) as client:
        return client.generate(
            prompt_token_ids=PROMPT, sampling=sampling, script=script, tools=tools, timeout_s=WAIT_S * 2
        )


def held_tool(release: threading.Event) -> Tool:
    """A tool that returns [5, 6, 7] once `release` is set (its trigger never fires by itself:
    a ScriptedCall of its name makes the pause)."""

    def run(_: str) -> list[int]:
        assert release.wait(WAIT_S), "the test never released the tool"
        return [5, 6, 7]

    return Tool("held", [0, 1, 2, 3, 4, 5, 6], run)


def restart_executor_after_outage(stack: ChaosStack) -> None:
    """Kill the executor; see health turn NOT_SERVING; restart it; see health SERVING again."""
    stack.kill(stack.executor)
    wait_for(lambda: stack.scheduler_health() == "NOT_SERVING", "NOT_SERVING while the executor is gone")
    with (
        Client(stack.scheduler_address, resume=NO_RESUME) as client,
        pytest.raises(InferceptError) as refused,
    ):
        client.generate(prompt_token_ids=PROMPT, sampling=GREEDY, timeout_s=WAIT_S)
    assert refused.value.code == "UNAVAILABLE"  # new requests are refused during the outage
    stack.start_executor()
    wait_for(lambda: stack.scheduler_health() == "SERVING", "SERVING once the executor is back")


def test_an_executor_killed_while_idle_is_replaced_and_serves_again(stack: ChaosStack) -> None:
    clean = generate(stack, GREEDY)
    restart_executor_after_outage(stack)
    assert generate(stack, GREEDY).output_token_ids == clean.output_token_ids
    stack.assert_all_blocks_free()


def test_requests_paused_when_the_executor_dies_finish_with_the_tokens_of_a_clean_run(
    stack: ChaosStack,
) -> None:
    script = [ScriptedCall(after_tokens=10, tool="held")]
    release = threading.Event()
    release.set()
    clean = [generate(stack, sampling, script, [held_tool(release)]) for sampling in (GREEDY, SAMPLED)]
    release.clear()
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(generate, stack, s, script, [held_tool(release)]) for s in (GREEDY, SAMPLED)]
        wait_for(lambda: stack.num_live("paused") == 2, "both requests paused")
        restart_executor_after_outage(stack)
        release.set()  # the tools return: the requests resume on the new executor
        results = [future.result(timeout=WAIT_S * 3) for future in futures]
    for result, reference in zip(results, clean, strict=True):
        assert result.output_token_ids == reference.output_token_ids
        assert result.usage.generated_tokens == 60
    stack.assert_all_blocks_free()


def test_requests_computing_when_the_executor_dies_finish_with_the_tokens_of_a_clean_run(
    stack: ChaosStack,
) -> None:
    # Greedy: a rebuilt context's logits may differ from the incremental ones in their last bits
    # (other kernels, other batch shapes), which a sampled draw near a token boundary can turn
    # into another token; greedy decoding is exact (README: Faults and recovery).
    long = SamplingParams(max_tokens=800, temperature=0.0, ignore_eos=True)
    clean = generate(stack, long)
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(generate, stack, long)
        wait_for(lambda: stack.num_live() == 1, "computing")
        time.sleep(0.5)  # some tokens into the generation
        stack.kill(stack.executor)
        time.sleep(1.0)  # an outage the request rides out
        stack.start_executor()
        result = future.result(timeout=WAIT_S * 3)
    assert result.output_token_ids == clean.output_token_ids
    assert result.usage.recomputed_tokens > 0  # it really was rebuilt
    stack.assert_all_blocks_free()


def test_a_hung_executor_fails_computing_requests_with_unavailable_then_recovers(tmp_path: Path) -> None:
    flags = ["--step-timeout", "3", "--outage-timeout", "3"]
    with chaos_stack(tmp_path, scheduler_flags=flags) as stack:
        long = SamplingParams(max_tokens=2000, temperature=0.0, ignore_eos=True)
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(generate, stack, long)
            wait_for(lambda: stack.num_live() == 1, "computing")
            stack.signal_executor(signal.SIGSTOP)
            try:
                with pytest.raises(InferceptError) as failed:
                    future.result(timeout=WAIT_S)
                assert failed.value.code == "UNAVAILABLE"  # not DEADLINE_EXCEEDED: the server said so
                assert stack.scheduler_health() == "NOT_SERVING"
            finally:
                stack.signal_executor(signal.SIGCONT)
        wait_for(lambda: stack.scheduler_health() == "SERVING", "SERVING after SIGCONT")
        assert generate(stack, GREEDY).usage.generated_tokens == 60
        stack.assert_all_blocks_free()
