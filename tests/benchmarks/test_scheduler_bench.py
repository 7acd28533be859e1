"""The scheduler benchmark's set-up and its side-by-side comparison's parsing (the runs themselves
are `make bench-scheduler`, not tests)."""

from __future__ import annotations

from benchmarks.scheduler_bench import decoding_scheduler, time_iterations
from benchmarks.scheduler_bench_compare import BenchRun, parse, summary

OUTPUT = """# scheduler core: CPU time per decode iteration (fabricated executor results)
 requests  schedule ms  update ms  total ms  plan KiB
       64        0.076      0.068     0.144       0.6
     1024        0.976      1.166     2.141       9.9

# plan/result round trip over the Run stream (real executor process, default model, CPU)
 requests  round trip ms  executor step ms  overhead ms  pipelined overhead ms  pipelined idle ms  idle median ms
        1           4.02              3.24         0.79                   0.77              0.775           0.060
      256          19.80             18.95         0.86                   0.12              0.069           0.050
"""


def test_the_timed_requests_decode_and_every_token_is_watched_for_a_stop_or_a_trigger() -> None:
    scheduler = decoding_scheduler(8)
    requests = list(scheduler.requests.values())
    assert all(r.num_generated == 1 and r.sampling.stop and r.tools for r in requests)
    schedule_s, update_s, plan_bytes = time_iterations(scheduler, 3)
    assert schedule_s > 0 and update_s > 0 and plan_bytes > 0
    assert all(r.num_generated == 4 for r in requests)  # one token per iteration each


def test_a_run_is_read_by_column_name_with_or_without_the_idle_column() -> None:
    run = parse(OUTPUT, load=2.0)
    assert run == BenchRun(
        {64: 0.144, 1024: 2.141}, {1: 0.77, 256: 0.12}, 2.0, {1: (0.775, 0.060), 256: (0.069, 0.050)}
    )
    old_round_trip = """# plan/result round trip over the Run stream (real executor process, default model, CPU)
 requests  round trip ms  executor step ms  overhead ms  pipelined overhead ms
      256          19.80             18.95         0.86                   0.12
"""
    old_run = parse(OUTPUT.split("# plan")[0] + old_round_trip, load=2.0)
    assert (old_run.pipelined_ms, old_run.idle_ms) == ({256: 0.12}, {})


def test_the_summary_gives_each_sides_median_and_the_median_pairwise_ratio() -> None:
    old = [BenchRun({64: 1.0}, {}, 1.0), BenchRun({64: 2.0}, {}, 1.0), BenchRun({64: 4.0}, {}, 1.0)]
    new = [BenchRun({64: 0.5}, {}, 1.0), BenchRun({64: 1.8}, {}, 1.0), BenchRun({64: 2.0}, {}, 1.0)]
    header, row = summary(old, new, "core_ms")
    assert header.split()[:4] == ["requests", "old", "ms", "new"]
    assert row.split() == ["64", "2.000", "1.800", "0.50"]
