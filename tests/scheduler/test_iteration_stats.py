"""Per-iteration statistics: the last iteration in the stats call, and the iteration log."""

from __future__ import annotations

import json
from pathlib import Path

from scheduler_svc.iteration_log import IterationLog
from scheduler_svc.stats import MAX_TRACKED_TOOLS, OTHER_TOOLS, SchedulerStats
from scheduler_svc.stats_render import stats_proto
from tests.scheduler.harness import Harness, fake_step
from tests.scheduler.test_infercept import pause_long_and_short, scripted


def test_iterations_add_up_to_the_totals(tmp_path: Path) -> None:
    h = Harness("infercept", num_device_blocks=24, num_host_blocks=4, estimator="oracle")
    log = IterationLog(tmp_path / "iterations.jsonl")
    h.scheduler.on_iteration = log
    a, b = pause_long_and_short(h)
    h.add(scripted(60, "calc", 1.0, first=3))
    for _ in range(6):
        h.step()
    h.resume(a, [5, 6])
    h.resume(b, [7])
    h.run()
    log.close()
    lines = [json.loads(line) for line in (tmp_path / "iterations.jsonl").read_text().splitlines()]
    stats = stats_proto(h.scheduler)
    assert len(lines) == stats.iterations == len(h.plans)
    assert [line["step_id"] for line in lines] == [str(p.step_id) for p in h.plans]  # uint64: a string
    for field in ("prompt_tokens", "decode_tokens", "returned_tokens", "recomputed_tokens"):
        assert sum(line[field] for line in lines) == getattr(stats, field), field
    assert sum(line["swap_out_blocks"] for line in lines) == stats.swap_out_blocks > 0
    assert sum(line["swap_in_blocks"] for line in lines) == stats.swap_in_blocks
    assert sum(line["paused_discards"] for line in lines) == stats.paused_discards
    assert max(line["paused_device_blocks"] for line in lines) >= 3  # the preserved 50 ms call
    assert stats.last_iteration.step_id == h.plans[-1].step_id
    assert stats.last_iteration.num_requests == len(h.plans[-1].work.request_ids)


def test_an_iteration_carries_the_executors_measured_times(tmp_path: Path) -> None:
    h = Harness("preserve", num_device_blocks=8)
    h.add(scripted(4, "calc", 1.0, first=2))
    plan = h.scheduler.schedule(1.0)
    result = fake_step(plan)
    result.forward_s, result.step_s, result.idle_s = 0.002, 0.003, 0.0005
    log = IterationLog(tmp_path / "iterations.jsonl")
    h.scheduler.on_iteration = log
    h.scheduler.update(plan, result, 1.0)
    log.close()
    last = stats_proto(h.scheduler).last_iteration
    assert (last.forward_s, last.step_s, last.executor_idle_s) == (0.002, 0.003, 0.0005)
    assert abs(last.stall_s - 0.001) < 1e-12
    assert json.loads((tmp_path / "iterations.jsonl").read_text())["executor_idle_s"] == 0.0005


def test_interceptions_of_unique_tool_names_are_counted_apart_only_up_to_a_cap() -> None:
    stats = SchedulerStats()
    for i in range(MAX_TRACKED_TOOLS + 10):
        stats.count_interception(f"tool-{i}")
    stats.count_interception("tool-0")
    counts = stats.interceptions_by_tool
    assert len(counts) == MAX_TRACKED_TOOLS + 1 and counts[OTHER_TOOLS] == 10 and counts["tool-0"] == 2
