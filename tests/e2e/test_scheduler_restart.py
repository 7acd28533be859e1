"""The scheduler killed with requests in flight: the client library resumes them on the restarted
scheduler, and the caller sees the tokens of a clean run."""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from infercept import Client, ResumePolicy, SamplingParams, ScriptedCall
from infercept.result import GenerateResult
from tests.e2e.chaos import WAIT_S, ChaosStack, chaos_stack, wait_for
from tests.e2e.test_executor_faults import PROMPT, held_tool

# Patient enough for a scheduler restart on a busy machine.
RESUME = ResumePolicy(max_attempts=20, initial_backoff_s=0.2, max_backoff_s=2.0)
PAUSING = SamplingParams(max_tokens=40, temperature=0.8, seed=5, ignore_eos=True)
# Greedy for the long one (see test_executor_faults.py); the short sampled one keeps the draws.
COMPUTING = SamplingParams(max_tokens=800, temperature=0.0, ignore_eos=True)


def generate(stack: ChaosStack, sampling: SamplingParams, release: threading.Event) -> GenerateResult:
    script = [ScriptedCall(after_tokens=10, tool="held")] if sampling.max_tokens == 40 else []
    with Client(stack.scheduler_address, resume=RESUME) as client:
        return client.generate(
            prompt_token_ids=PROMPT,
            sampling=sampling,
            script=script,
            tools=[held_tool(release)],
            timeout_s=WAIT_S * 4,
        )


def test_requests_in_flight_when_the_scheduler_dies_resume_with_identical_tokens(tmp_path: Path) -> None:
    with chaos_stack(tmp_path) as stack:
        release = threading.Event()
        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(generate, stack, s, release) for s in (PAUSING, COMPUTING)]
            wait_for(lambda: stack.num_live("paused") == 1 and stack.stats().decode_tokens > 200, "progress")
            stack.kill(stack.scheduler)
            stack.start_scheduler()  # on the same port; it takes the executor over
            release.set()  # the paused request's tool returns into the broken stream
            results = [future.result(timeout=WAIT_S * 4) for future in futures]
        assert all(result.num_resumptions >= 1 for result in results)
        # Clean runs, the unseeded one with the seed the first scheduler chose for it.
        computing = dataclasses.replace(COMPUTING, seed=results[1].seed)
        clean = [generate(stack, sampling, release) for sampling in (PAUSING, computing)]
        for result, reference in zip(results, clean, strict=True):
            assert result.output_token_ids == reference.output_token_ids
            assert result.usage.generated_tokens == reference.usage.generated_tokens
        assert results[0].interceptions[0].returned_token_ids == (5, 6, 7)
        stack.assert_all_blocks_free()
