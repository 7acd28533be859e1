"""Scheduler benchmark: the scheduler core's own CPU time per iteration (schedule + update) with
64, 256 and 1024 running requests, and the plan/result round trip over the executor's Run stream.

    python -m benchmarks.scheduler_bench [--iterations N]

The core is driven with fabricated executor results (every sampled request gets a token), so the
figures are the scheduler's cost alone: block tables, budgets, plan building, packing, token
appends, detokenizing and trigger checks. The round trip is measured against a real executor
process: wall time of one plan on the stream minus the executor's own step time, and pipelined as
the step loop runs decodes planned ahead (the next plan sent while one computes): wall time per
step over the run minus the mean step time, what the executor waits per step, and the idle time
the executor itself measures between its steps (StepResult.idle_s: the wait without the stream's
first plan and last result, which the wall-time figure spreads over the run), mean and median: on
a shared machine a few steps wait milliseconds for a core, which moves the mean, not the median.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from executor_svc.byte_tokenizer import build_byte_tokenizer
from infercept.tools import Tool
from infercept.types import RequestSpec, SamplingParams
from infercept.v1 import executor_pb2 as pb
from scheduler_svc.config import ExecutorDescription, SchedulerConfig
from scheduler_svc.executor_client import ExecutorClient, ExecutorUnavailable
from scheduler_svc.scheduler import Scheduler
from svc_common.logs import configure_logging
from svc_common.step_wire import TableUpdate, Work, pack_table_updates, pack_work
from tooling.launcher import run_service

CONTEXT_TOKENS = 256
REQUEST_COUNTS = (64, 256, 1024)


def fabricated_result(plan: pb.StepPlan) -> pb.StepResult:
    """A token for every sampling request, as the executor would answer (its cost is not the
    scheduler's: time_iterations builds it outside the timed spans)."""
    work = plan.work
    rows = [
        (rid, (rid * 7 + start) % 256)
        for rid, start, sample in zip(work.request_ids, work.start_positions, work.sample, strict=True)
        if sample
    ]
    sampled = pb.SampledTokens(
        request_ids=[rid for rid, _ in rows],
        token_ids=[token for _, token in rows],
        logprobs=[0.0] * len(rows),
    )
    return pb.StepResult(step_id=plan.step_id, sampled=sampled)


def no_call(arguments: str) -> str:
    """The calc tool's function: never called (the fabricated tokens never write its trigger)."""
    raise AssertionError(f"calc called with {arguments!r}")


def decoding_scheduler(num_requests: int) -> Scheduler:
    """A scheduler with `num_requests` requests past their prompts, decoding."""
    description = ExecutorDescription(
        block_size=16,
        # Early requests decode while later prompts prefill: room for 1024 tokens each.
        num_device_blocks=num_requests * 64,
        num_host_blocks=0,
        vocab_size=258,
        max_model_len=4096,
        eos_token_ids=(257,),
    )
    # A budget that prefills every prompt at once: the timed iterations are pure decode.
    config = SchedulerConfig(
        policy="preserve", max_batched_tokens=num_requests * CONTEXT_TOKENS, max_num_seqs=num_requests
    )
    scheduler = Scheduler(config, description, build_byte_tokenizer())
    # Built as a client (and the gateway) builds it: a stop string and a text trigger, so that
    # every token is detokenized and watched.
    sampling = SamplingParams(max_tokens=100_000, ignore_eos=True, stop=["</answer>"])
    tools = [Tool("calc", "</calc>", no_call)]
    for i in range(num_requests):
        prompt = [(i + j) % 256 for j in range(CONTEXT_TOKENS)]
        spec = RequestSpec(prompt_token_ids=prompt, sampling=sampling, tools=tools)
        scheduler.add(spec.to_proto(), now=0.0)
    while any(r.num_generated == 0 for r in scheduler.requests.values()):
        plan = scheduler.schedule(0.0)
        scheduler.update(plan, fabricated_result(plan), 0.0)
    return scheduler


def time_iterations(scheduler: Scheduler, iterations: int) -> tuple[float, float, int]:
    """Median CPU seconds of schedule and of update per iteration, and the plan's size in bytes."""
    schedule_s, update_s, size = [], [], 0
    for i in range(iterations):
        began = time.process_time()
        plan = scheduler.schedule(float(i))
        scheduled = time.process_time()
        result = fabricated_result(plan)
        updating = time.process_time()
        scheduler.update(plan, result, float(i))
        schedule_s.append(scheduled - began)
        update_s.append(time.process_time() - updating)
        size = plan.ByteSize()
    return statistics.median(schedule_s), statistics.median(update_s), size


def decode_plan(step_id: int, work: pb.WorkBatch) -> pb.StepPlan:
    """`work` as the scheduler sends it: a fresh plan each step, built from lists (plan_builder.py)."""
    plan = pb.StepPlan(step_id=step_id)
    plan.work.request_ids.extend(list(work.request_ids))
    plan.work.start_positions.extend(list(work.start_positions))
    plan.work.num_tokens.extend(list(work.num_tokens))
    plan.work.token_ids = work.token_ids
    plan.work.sample.extend(list(work.sample))
    return plan


async def round_trips(address: str, batch_sizes: tuple[int, ...], repeats: int) -> list[str]:
    """Per batch size: one plan at a time (wall time of each exchange minus the executor's own
    step), and pipelined as the step loop runs planned-ahead decodes (the next plan sent while one
    computes: wall time per step over a run minus the mean step, the executor's wait per step)."""
    client = ExecutorClient(address)
    await client.wait_until_serving(60.0)
    await client.reset()
    lines = [
        f"{'requests':>9} {'round trip ms':>14} {'executor step ms':>17} {'overhead ms':>12}"
        f" {'pipelined overhead ms':>22} {'pipelined idle ms':>18} {'idle median ms':>15}"
    ]
    step_id = 0
    for batch in batch_sizes:
        await client.reset()
        step_id += 1
        plan = pb.StepPlan(
            step_id=step_id,
            new_requests=[pb.NewRequest(request_id=rid) for rid in range(batch)],
            block_table_updates=pack_table_updates(TableUpdate(rid, 0, [rid]) for rid in range(batch)),
            work=pack_work(Work(rid, 0, [1], sample=True) for rid in range(batch)),
        )
        await client.run(plan)
        decode_work = pack_work(Work(rid, 1, [2], sample=True) for rid in range(batch))
        walls, steps = [], []
        for _ in range(repeats):
            step_id += 1
            decode = decode_plan(step_id, decode_work)
            began = time.perf_counter()
            result = await client.run(decode)
            walls.append(time.perf_counter() - began)
            steps.append(result.step_s)
        wall, step = statistics.median(walls), statistics.median(steps)
        pipelined_steps, idles = [], []
        plans = [decode_plan(step_id + 1 + i, decode_work) for i in range(repeats)]
        step_id += repeats
        began = time.perf_counter()
        await client.send(plans[0])
        for i, running in enumerate(plans):
            if i + 1 < len(plans):
                await client.send(plans[i + 1])
            result = await client.receive(running)
            pipelined_steps.append(result.step_s)
            idles.append(result.idle_s)
        pipelined_wait = (time.perf_counter() - began) / repeats - statistics.mean(pipelined_steps)
        idles = idles[1:]  # the first waited for the stream's first plan
        lines.append(
            f"{batch:>9} {wall * 1e3:>14.2f} {step * 1e3:>17.2f} {(wall - step) * 1e3:>12.2f}"
            f" {pipelined_wait * 1e3:>22.2f} {statistics.mean(idles) * 1e3:>18.3f}"
            f" {statistics.median(idles) * 1e3:>15.3f}"
        )
    await client.close()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=200)
    args = parser.parse_args()
    configure_logging("warning")
    print("# scheduler core: CPU time per decode iteration (fabricated executor results)")
    print(f"{'requests':>9} {'schedule ms':>12} {'update ms':>10} {'total ms':>9} {'plan KiB':>9}")
    for count in REQUEST_COUNTS:
        scheduler = decoding_scheduler(count)
        schedule_s, update_s, size = time_iterations(scheduler, args.iterations)
        total_ms = (schedule_s + update_s) * 1e3
        print(
            f"{count:>9} {schedule_s * 1e3:>12.3f} {update_s * 1e3:>10.3f} {total_ms:>9.3f} {size / 1024:>9.1f}"
        )
    print("\n# plan/result round trip over the Run stream (real executor process, default model, CPU)")
    with tempfile.TemporaryDirectory() as logs:
        args_ = [
            "--model",
            "tiny",
            "--device",
            "cpu",
            "--num-device-blocks",
            "1100",
            "--num-host-blocks",
            "0",
        ]
        with run_service("executor", "127.0.0.1:0", args_, Path(logs)) as address:
            try:
                print("\n".join(asyncio.run(round_trips(address, (1, 64, 256, 1024), repeats=20))))
            except ExecutorUnavailable:
                # The log goes with the temporary directory: show why the executor went away.
                print((Path(logs) / "executor.log").read_text()[-4000:], file=sys.stderr)
                raise


if __name__ == "__main__":
    main()
