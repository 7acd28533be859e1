"""Runs RequestPlans against a live deployment in real time and records what happened.

Arrivals are real waits; each plan is one AsyncClient.generate with a synthetic script, whose
tool calls the client library really waits out. Only requests arriving inside the measurement
window count, and server counters are read at both of its edges:

    0 ──── warmup_s ────┬───────────── duration_s ─────────────┬──> time
     arrivals warm the  │ arrivals are measured; GetStats at   │ measured requests still running
     server (not kept)  │ both edges                           │ are reported as not completed, with
                                                                  the output they had streamed (cut_s);
                                                                  everything still running is cancelled

Times in the records are seconds since the run started (time.monotonic()).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from infercept.async_client import AsyncClient
from infercept.errors import InferceptError
from infercept.events import Event, Intercepted, Resumed, TokenDelta
from infercept.result import GenerateResult
from infercept.types import SamplingParams, ScriptedCall
from scheduler_svc.sim.request_plan import RequestPlan, RequestRecord

PROGRESS_INTERVAL_S = 0.25


@dataclasses.dataclass(frozen=True)
class RunResult:
    records: list[RequestRecord]  # every request that arrived inside the window, by index
    num_warmup_requests: int  # arrived before the window; not measured
    num_unfinished: int  # measured requests still running when the window closed (cancelled)
    errors: dict[str, int]  # measured requests that failed inside the window, by error code
    stats_before: dict[str, Any]  # client.server_stats() as the window opened
    stats_after: dict[str, Any]  # ... and as it closed


@dataclasses.dataclass
class _Progress:
    """What a request has streamed so far (monotonic times), for a cut at the window's end."""

    num_generated: int = 0
    num_returned: int = 0
    tool_time_s: float = 0.0  # inside calls that have returned
    call_started_s: float | None = None  # when the call now running was intercepted

    def observe(self, event: Event, now: float) -> None:
        if isinstance(event, TokenDelta):
            self.num_generated += len(event.token_ids)
        elif isinstance(event, Intercepted):
            self.call_started_s = now
        elif isinstance(event, Resumed):
            self.num_returned += event.num_returned_tokens
            if self.call_started_s is not None:
                self.tool_time_s += now - self.call_started_s
            self.call_started_s = None


@dataclasses.dataclass
class _Launched:
    plan: RequestPlan
    sent_s: float  # seconds since the run started
    task: asyncio.Task[GenerateResult | InferceptError]
    progress: _Progress


def request_inputs(
    plan: RequestPlan, vocab_size: int, seed: int
) -> tuple[list[int], SamplingParams, list[ScriptedCall]]:
    """Prompt ids, sampling and script of a plan: greedy, exactly plan.max_tokens generated,
    random ids in [0, vocab_size) seeded by (seed, plan.index) for the prompt and every result."""
    rng = np.random.default_rng([seed, plan.index])
    prompt_ids = rng.integers(0, vocab_size, plan.prompt_tokens).tolist()
    script = []
    for segment in plan.segments[:-1]:
        assert segment.tool is not None, "every segment but the last calls a tool"
        returned_ids = rng.integers(0, vocab_size, segment.returned_tokens).tolist()
        script.append(
            ScriptedCall(
                after_tokens=segment.generated_tokens,
                tool=segment.tool,
                wait_s=segment.duration_s,
                returned_token_ids=returned_ids,
            )
        )
    sampling = SamplingParams(max_tokens=plan.max_tokens, temperature=0.0, ignore_eos=True)
    return prompt_ids, sampling, script


async def run_plans(
    client: AsyncClient,
    plans: Sequence[RequestPlan],
    *,
    warmup_s: float,
    duration_s: float,
    vocab_size: int,
    seed: int,
    show_progress: bool = True,
) -> RunResult:
    """Send every plan arriving before warmup_s + duration_s at its arrival time, measure the
    window [warmup_s, warmup_s + duration_s], then close the client (cancelling whatever still
    runs) and return the records. Ends promptly at the window's end. Raises InferceptError if
    the server's stats cannot be read."""
    start = time.monotonic()
    window_end_s = warmup_s + duration_s
    launched: list[_Launched] = []
    stats_before_task = asyncio.create_task(_stats_at(client, start + warmup_s))
    progress_task = asyncio.create_task(_show_progress(launched, start, warmup_s, duration_s, show_progress))
    try:
        for plan in sorted(plans, key=lambda p: p.arrival_s):
            if plan.arrival_s >= window_end_s:
                break
            await _sleep_until(start + plan.arrival_s)
            progress = _Progress()
            task = asyncio.create_task(_run_request(client, plan, vocab_size, seed, progress))
            launched.append(_Launched(plan, time.monotonic() - start, task, progress))
        await _sleep_until(start + window_end_s)
        is_done = [item.task.done() for item in launched]
        cut = [dataclasses.replace(item.progress) for item in launched]  # what each had at the end
        stats_after = await client.server_stats()
        stats_before = await stats_before_task
    finally:
        progress_task.cancel()
        stats_before_task.cancel()
        await client.close()  # cancels the requests still running
        outcomes = await asyncio.gather(*(item.task for item in launched), return_exceptions=True)
        with contextlib.suppress(asyncio.CancelledError):
            await progress_task

    records, errors, num_unfinished = [], collections.Counter[str](), 0
    for item, done, outcome, progress in zip(launched, is_done, outcomes, cut, strict=True):
        if item.plan.arrival_s < warmup_s:  # the plan decides, not the loop's timing
            continue
        if not done:
            num_unfinished += 1
        elif not isinstance(outcome, GenerateResult):
            errors[getattr(outcome, "code", type(outcome).__name__)] += 1
        if done:
            records.append(_record(item, outcome, start, window_end_s))
        else:
            records.append(_cut_record(item, progress, start, window_end_s))
    return RunResult(
        records=records,
        num_warmup_requests=len(launched) - len(records),
        num_unfinished=num_unfinished,
        errors=dict(errors),
        stats_before=stats_before,
        stats_after=stats_after,
    )


async def _run_request(
    client: AsyncClient, plan: RequestPlan, vocab_size: int, seed: int, progress: _Progress
) -> GenerateResult | InferceptError:
    prompt_ids, sampling, script = request_inputs(plan, vocab_size, seed)
    try:
        stream = client.stream(prompt_token_ids=prompt_ids, sampling=sampling, script=script)
        async for event in stream:
            progress.observe(event, time.monotonic())
        return stream.result
    except InferceptError as error:  # one failed request must not end the run
        return error


def _cut_record(item: _Launched, progress: _Progress, start: float, window_end_s: float) -> RequestRecord:
    """A request still running at the window's end, with the output it had streamed by then."""
    end = start + window_end_s
    running_call_s = end - progress.call_started_s if progress.call_started_s is not None else 0.0
    return RequestRecord(
        index=item.plan.index,
        arrival_s=item.sent_s,
        completed=False,
        tool_time_s=progress.tool_time_s + running_call_s,
        generated_tokens=progress.num_generated,
        returned_tokens=progress.num_returned,
        cut_s=window_end_s,
    )


def _record(item: _Launched, outcome: object, start: float, window_end_s: float) -> RequestRecord:
    if not isinstance(outcome, GenerateResult) or outcome.finish_s - start > window_end_s:
        return RequestRecord(index=item.plan.index, arrival_s=item.sent_s, completed=False)
    return RequestRecord(
        index=item.plan.index,
        arrival_s=outcome.arrival_s - start,
        completed=True,
        first_token_s=None if outcome.first_token_s is None else outcome.first_token_s - start,
        finish_s=outcome.finish_s - start,
        tool_time_s=outcome.tool_time_s,
        generated_tokens=outcome.usage.generated_tokens,
        returned_tokens=outcome.usage.returned_tokens,
    )


async def _stats_at(client: AsyncClient, when: float) -> dict[str, Any]:
    await _sleep_until(when)
    return await client.server_stats()


async def _sleep_until(when: float) -> None:
    delay_s = when - time.monotonic()
    if delay_s > 0:
        await asyncio.sleep(delay_s)


async def _show_progress(
    launched: list[_Launched], start: float, warmup_s: float, duration_s: float, is_enabled: bool
) -> None:
    """A bar over warm-up and window, in seconds, with the request counts; tqdm leaves it out
    when stderr is not a terminal."""
    total_s = warmup_s + duration_s
    bar_format = "{desc} {bar} {n:.1f}/{total:.1f} s{postfix}"
    with tqdm(total=total_s, bar_format=bar_format, disable=None if is_enabled else True, leave=False) as bar:
        while True:
            elapsed_s = min(time.monotonic() - start, total_s)
            num_done = sum(item.task.done() for item in launched)
            bar.set_description("warm-up" if elapsed_s < warmup_s else "measuring", refresh=False)
            bar.set_postfix_str(
                f"sent {len(launched)}, done {num_done}, running {len(launched) - num_done}", refresh=False
            )
            bar.update(elapsed_s - bar.n)
            await asyncio.sleep(PROGRESS_INTERVAL_S)
