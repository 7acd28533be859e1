"""Soak: the real two-process stack under sustained overload, printing how admitted requests fare.

    python -m benchmarks.soak                    # measure saturation, then 5 min at 1.2x, 5 min at 2x
    python -m benchmarks.soak --phases 1.2:60,2:60 --saturation-rate 1.5   # a short run

1. Saturation (unless --saturation-rate is given): a closed loop of --measure-concurrency
   clients for --measure-s seconds; saturation (requests/s) = the tokens the model computed per
   second (GetStats; prompt, decode and returned tokens, not recomputation) / the mean tokens a
   request of the workload needs.
2. Each phase sends the workload (the load generator's plans, Poisson arrivals) at its multiple
   of saturation. Every --report-every-s seconds a line gives, for the requests that ended in
   that interval: p50/p90/p99 normalized latency (s/token, tool time excluded) and TTFT of the
   admitted ones, refusals (RESOURCE_EXHAUSTED: how many, and how fast they came back), other
   errors, and the resident memory (RSS) of both processes.
3. At the end, once the in-flight requests are done (bounded wait), the free blocks.

Reads RSS from /proc (Linux). Refused requests are not retried: a refusal is what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from infercept.async_client import AsyncClient
from infercept.errors import InferceptError
from scheduler_svc.sim.request_plan import RequestPlan, RequestRecord
from tooling.launcher import launch
from tooling.loadgen.metrics import FORWARD_TOKEN_KINDS, distribution, normalized_latency_s
from tooling.loadgen.runner import request_inputs
from tooling.loadgen.workload_spec import WorkloadSpec, plans_for
from tooling.loadgen.workloads import STATISTICS

DRAIN_TIMEOUT_S = 120.0  # the longest wait for in-flight requests after the last phase


@dataclasses.dataclass(frozen=True)
class SoakConfig:
    phases: tuple[tuple[float, float], ...]  # (multiple of saturation, seconds)
    saturation_rate: float  # requests/s; 0: measure it first
    measure_s: float
    measure_concurrency: int
    report_every_s: float
    workload: str
    duration_scale: float  # tool durations scaled, as the demo does on a small machine
    statistics: str  # what the drawn workload follows (the load generator's --statistics)
    max_model_len: int
    policy: str
    max_queue_wait_s: float
    device: str
    num_device_blocks: int
    seed: int


@dataclasses.dataclass
class Outcome:
    """One request: sent at sent_s, ended at end_s (monotonic seconds)."""

    sent_s: float
    end_s: float
    code: str  # "" for completed, else the error's status name
    record: RequestRecord | None = None  # completed requests only


async def _send(client: AsyncClient, plan: RequestPlan, vocab_size: int, seed: int) -> Outcome:
    prompt_ids, sampling, script = request_inputs(plan, vocab_size, seed)
    sent_s = time.monotonic()
    try:
        result = await client.generate(prompt_token_ids=prompt_ids, sampling=sampling, script=script)
    except InferceptError as error:
        return Outcome(sent_s, time.monotonic(), error.code)
    record = RequestRecord(
        index=plan.index,
        arrival_s=result.arrival_s,
        completed=True,
        first_token_s=result.first_token_s,
        finish_s=result.finish_s,
        tool_time_s=result.tool_time_s,
        generated_tokens=result.usage.generated_tokens,
        returned_tokens=result.usage.returned_tokens,
    )
    return Outcome(sent_s, time.monotonic(), "", record)


def _plan_tokens(plan: RequestPlan) -> int:
    """Tokens a request computes at least: prompt, generated and returned."""
    return plan.prompt_tokens + sum(s.generated_tokens + s.returned_tokens for s in plan.segments)


async def measure_saturation(client: AsyncClient, config: SoakConfig, vocab_size: int) -> float:
    """Requests/s the stack sustains: computed tokens/s in a closed loop over mean tokens/request."""
    plans = _plans(config, rate=1000.0, span_s=config.measure_s)  # arrival times unused here
    pending = iter(plans)

    async def worker() -> None:
        for plan in pending:
            outcome = await _send(client, plan, vocab_size, config.seed)
            if outcome.code == "RESOURCE_EXHAUSTED":
                await asyncio.sleep(0.5)

    before = await client.server_stats()
    start_s = time.monotonic()
    workers = [asyncio.create_task(worker()) for _ in range(config.measure_concurrency)]
    await asyncio.sleep(config.measure_s)
    after = await client.server_stats()
    elapsed_s = time.monotonic() - start_s
    for task in workers:
        task.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    # Recomputation is work a request does not need: the rate counts the tokens requests need.
    kinds = [k for k in FORWARD_TOKEN_KINDS if k != "recomputed_tokens"]
    tokens = sum(after.get(k, 0) - before.get(k, 0) for k in kinds)
    mean_tokens = float(np.mean([_plan_tokens(p) for p in plans]))
    return tokens / elapsed_s / mean_tokens


def _workload(config: SoakConfig, rate: float, span_s: float) -> WorkloadSpec:
    return WorkloadSpec(
        config.workload,
        rate,
        span_s,
        seed=config.seed,
        duration_scale=config.duration_scale,
        statistics=config.statistics,
    )


def _plans(config: SoakConfig, rate: float, span_s: float) -> list[RequestPlan]:
    """The load generator's plans: refused where the length does not fit the workload."""
    return plans_for(_workload(config, rate, span_s), config.max_model_len)[0]


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _service_pids() -> dict[str, int]:
    """The pids of our children running the scheduler and the executor (from /proc)."""
    pids = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid():
            for name in ("scheduler", "executor"):
                if f"{name}_svc".encode() in cmdline:
                    pids[name] = int(entry.name)
    return pids


def _fmt(values: Sequence[float], scale: float = 1.0) -> str:
    d = distribution([v * scale for v in values])
    if d.p50 is None or d.p90 is None or d.p99 is None:
        return "-"
    return f"{d.p50:.3g}/{d.p90:.3g}/{d.p99:.3g}"


def report_line(label: str, outcomes: Sequence[Outcome], pids: dict[str, int], interval_s: float) -> str:
    """One interval's figures for the outcomes that ended in it."""
    done = [o.record for o in outcomes if o.record is not None]
    refused = [o for o in outcomes if o.code == "RESOURCE_EXHAUSTED"]
    errors = [o for o in outcomes if o.code and o.code != "RESOURCE_EXHAUSTED"]
    norm = [normalized_latency_s(r) for r in done]
    ttft = [r.first_token_s - r.arrival_s for r in done if r.first_token_s is not None]
    refusal_ms = [(o.end_s - o.sent_s) * 1000 for o in refused]
    rss = " ".join(f"{name} {_rss_mib(pid):.0f} MiB" for name, pid in sorted(pids.items()))
    return (
        f"{label} | done {len(done)} ({len(done) / interval_s:.2f}/s) norm s/tok p50/90/99 {_fmt(norm)}"
        f" ttft s {_fmt(ttft)} | refused {len(refused)} in ms {_fmt(refusal_ms)}"
        f" | errors {len(errors)} | rss {rss}"
    )


async def run_phase(
    client: AsyncClient,
    config: SoakConfig,
    multiple: float,
    span_s: float,
    rate: float,
    vocab: int,
    tasks: list[asyncio.Task[Outcome]],
    reported: set[int],
) -> None:
    """Send the phase's plans at their arrival times into `tasks`, printing a line every report
    interval for every request (of any phase) that ended in it; `reported`: the indexes in
    `tasks` already counted."""
    plans = _plans(config, rate * multiple, span_s)
    print(f"phase {multiple:g}x saturation: {rate * multiple:.2f} req/s for {span_s:g} s", flush=True)
    pids = _service_pids()
    start_s = time.monotonic()
    next_report_s = start_s + config.report_every_s
    for plan in [*plans, None]:
        send_at_s = start_s + (plan.arrival_s if plan is not None else span_s)
        while next_report_s <= send_at_s:
            await asyncio.sleep(max(next_report_s - time.monotonic(), 0))
            ended = [t.result() for i, t in enumerate(tasks) if t.done() and i not in reported]
            reported |= {i for i, t in enumerate(tasks) if t.done()}
            label = f"  {multiple:g}x t={next_report_s - start_s:5.0f}s"
            print(report_line(label, ended, pids, config.report_every_s), flush=True)
            next_report_s += config.report_every_s
        if plan is None:
            break
        await asyncio.sleep(max(send_at_s - time.monotonic(), 0))
        tasks.append(asyncio.create_task(_send(client, plan, vocab, config.seed + 1)))


async def soak(config: SoakConfig, address: str) -> None:
    async with AsyncClient(address) as client:
        info = await client.server_info(timeout_s=30.0)
        rate = config.saturation_rate
        if rate <= 0:
            rate = await measure_saturation(client, config, info.vocab_size)
            print(f"saturation: {rate:.2f} requests/s (measured over {config.measure_s:g} s)", flush=True)
        pending: list[asyncio.Task[Outcome]] = []
        reported: set[int] = set()
        for multiple, span_s in config.phases:
            await run_phase(client, config, multiple, span_s, rate, info.vocab_size, pending, reported)
        done, not_done = await asyncio.wait(pending, timeout=DRAIN_TIMEOUT_S) if pending else (set(), set())
        totals = [t.result() for t in done]
        print(
            report_line("all phases", totals, _service_pids(), sum(s for _, s in config.phases)), flush=True
        )
        for task in not_done:
            task.cancel()
        await asyncio.sleep(1.0)  # let the server free what the cancelled sessions held
        stats = await client.server_stats()
        live = {k: v for k, v in stats.get("requests_by_state", {}).items() if k != "finished"}
        print(
            f"end: device blocks free {stats['device_blocks_free']}/{stats['device_blocks_total']}, "
            f"host blocks free {stats['host_blocks_free']}/{stats['host_blocks_total']}, "
            f"live requests {live}, still running after {DRAIN_TIMEOUT_S:g} s: {len(not_done)}",
            flush=True,
        )


def _phases(text: str) -> tuple[tuple[float, float], ...]:
    """ "1.2:300,2:300" -> ((1.2, 300.0), (2.0, 300.0))."""
    phases = tuple(tuple(float(x) for x in part.split(":")) for part in text.split(",") if part)
    if not phases or any(len(p) != 2 or p[0] <= 0 or p[1] <= 0 for p in phases):
        raise argparse.ArgumentTypeError(f"phases must be MULTIPLE:SECONDS[,...], got {text!r}")
    return phases  # type: ignore[return-value]


def parse_args(argv: Sequence[str] | None = None) -> SoakConfig:
    p = argparse.ArgumentParser(
        prog="soak", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--phases", type=_phases, default="1.2:300,2:300", help="MULTIPLE:SECONDS of saturation")
    p.add_argument("--saturation-rate", type=float, default=0.0, help="requests/s; 0: measure it first")
    p.add_argument("--measure-s", type=float, default=30.0, help="seconds of the saturation measurement")
    p.add_argument("--measure-concurrency", type=int, default=64, help="closed-loop clients when measuring")
    p.add_argument("--report-every-s", type=float, default=10.0)
    p.add_argument("--workload", default="mixed")
    p.add_argument("--duration-scale", type=float, default=0.05, help="tool durations scaled by this")
    p.add_argument("--max-model-len", type=int, default=512)
    p.add_argument("--statistics", choices=STATISTICS, default="trace", help="as infercept-loadgen's")
    p.add_argument("--policy", default="infercept")
    p.add_argument("--max-queue-wait-s", type=float, default=10.0, help="the scheduler's admission bound")
    p.add_argument("--device", default="cpu")
    p.add_argument("--num-device-blocks", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    return SoakConfig(
        phases=args.phases,
        saturation_rate=args.saturation_rate,
        measure_s=args.measure_s,
        measure_concurrency=args.measure_concurrency,
        report_every_s=args.report_every_s,
        workload=args.workload,
        duration_scale=args.duration_scale,
        statistics=args.statistics,
        max_model_len=args.max_model_len,
        policy=args.policy,
        max_queue_wait_s=args.max_queue_wait_s,
        device=args.device,
        num_device_blocks=args.num_device_blocks,
        seed=args.seed,
    )


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    try:  # a workload the length does not fit is refused before the stack starts
        dataclasses.replace(_workload(config, 1.0, 60.0), max_model_len=config.max_model_len).validate()
    except ValueError as error:
        print(f"soak: {error}")
        return 2
    executor = ["--model", "tiny", "--device", config.device, "--max-model-len", str(config.max_model_len)]
    executor += ["--num-device-blocks", str(config.num_device_blocks)]
    scheduler = ["--policy", config.policy, "--max-queue-wait-s", str(config.max_queue_wait_s)]
    with launch(executor, scheduler) as stack:
        print(f"soak: stack at {stack.scheduler_address} (logs {stack.log_dir}), policy {config.policy}")
        asyncio.run(soak(config, stack.scheduler_address))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
