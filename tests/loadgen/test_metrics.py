"""Metrics against hand-computed examples; the results record's schema; the server delta."""

from __future__ import annotations

import dataclasses
import json

import pytest

from scheduler_svc.sim.request_plan import RequestRecord
from tooling.loadgen.metrics import server_delta, summarize
from tooling.run_record import Distribution, RunRecord, ServerDelta

RECORDS = [
    # (2.5 − 0 − 1.0) / (8 + 2) = 0.15 s/token; TTFT 0.5 s
    RequestRecord(
        0, 0.0, True, first_token_s=0.5, finish_s=2.5, tool_time_s=1.0, generated_tokens=8, returned_tokens=2
    ),
    # Three interceptions of 1 s each: (7.2 − 1 − 3) / (20 + 10) = 0.10667 s/token; TTFT 0.2 s
    RequestRecord(
        1,
        1.0,
        True,
        first_token_s=1.2,
        finish_s=7.2,
        tool_time_s=3.0,
        generated_tokens=20,
        returned_tokens=10,
    ),
    # No call: (3.1 − 2) / 5 = 0.22 s/token; TTFT 0.1 s
    RequestRecord(2, 2.0, True, first_token_s=2.1, finish_s=3.1, generated_tokens=5),
    # Still running when the window closed: counted as submitted only.
    RequestRecord(3, 3.0, False, first_token_s=3.1, generated_tokens=40),
]


def test_summarize_matches_hand_computed_values() -> None:
    summary = summarize(RECORDS, window_s=10.0)
    assert summary.submitted == 4 and summary.completed == 3
    assert summary.completed_per_s == pytest.approx(0.3)
    assert summary.output_tokens_per_s == pytest.approx((8 + 20 + 5) / 10)
    # Sorted latencies 0.10667, 0.15, 0.22; percentiles interpolate linearly between ranks:
    # p90 sits at rank 1.8 -> 0.15 + 0.8 · 0.07, p99 at rank 1.98.
    latency = summary.normalized_latency_s_per_token
    assert latency.mean == pytest.approx((3.2 / 30 + 0.15 + 0.22) / 3)
    assert latency.p50 == pytest.approx(0.15)
    assert latency.p90 == pytest.approx(0.206)
    assert latency.p99 == pytest.approx(0.2186)
    # TTFTs 0.1, 0.2, 0.5
    assert summary.ttft_s.to_json() == pytest.approx({"mean": 0.8 / 3, "p50": 0.2, "p90": 0.44, "p99": 0.494})


def test_nothing_completed_reports_no_statistics() -> None:
    summary = summarize(RECORDS[3:], window_s=5.0)
    assert (summary.submitted, summary.completed, summary.completed_per_s) == (1, 0, 0.0)
    assert summary.normalized_latency_s_per_token == Distribution(None, None, None, None)
    assert summary.output_tokens_per_s == 0.0
    with pytest.raises(ValueError):
        summarize(RECORDS, window_s=0.0)
    with pytest.raises(ValueError):  # completed without a finish time
        summarize([RequestRecord(0, 0.0, True)], window_s=1.0)


STATS_BEFORE = {
    "prompt_tokens": 100,
    "decode_tokens": 50,
    "returned_tokens": 10,
    "recomputed_tokens": 0,
    "swap_out_blocks": 1,
    "swap_in_blocks": 0,
    "paused_device_block_seconds": 2.0,
    "iterations": 7,
    "device_blocks_free": 60,
}
STATS_AFTER = {
    **STATS_BEFORE,
    "prompt_tokens": 300,
    "decode_tokens": 250,
    "returned_tokens": 30,
    "recomputed_tokens": 20,
    "swap_out_blocks": 5,
    "swap_in_blocks": 3,
    "paused_device_block_seconds": 4.5,
}


def test_server_delta() -> None:
    assert server_delta(STATS_BEFORE, STATS_AFTER).to_json() == {
        "forward_tokens": 200 + 200 + 20 + 20,
        "recomputed_tokens": 20,
        "recompute_share": pytest.approx(20 / 440),
        "recompute_time_share": None,  # the server does not count forward time
        "swap_out_blocks": 4,
        "swap_in_blocks": 3,
        "paused_device_block_seconds": pytest.approx(2.5),
    }
    idle = server_delta(STATS_BEFORE, STATS_BEFORE)
    assert idle.forward_tokens == 0 and idle.recompute_share == 0.0


def test_the_recompute_share_of_forward_time_comes_from_the_time_counters() -> None:
    before = {**STATS_BEFORE, "forward_s": 10.0, "recomputed_forward_s": 1.0}
    after = {**STATS_AFTER, "forward_s": 30.0, "recomputed_forward_s": 9.0}
    assert server_delta(before, after).recompute_time_share == pytest.approx(8 / 20)
    assert server_delta(before, before).recompute_time_share == 0.0


def test_unfinished_requests_count_with_the_output_they_had_when_asked() -> None:
    cut = RequestRecord(4, 5.0, False, generated_tokens=10, returned_tokens=5, tool_time_s=1.5, cut_s=10.0)
    no_output = RequestRecord(5, 9.9, False, cut_s=10.0)
    plain = summarize([*RECORDS[:3], cut, no_output], window_s=10.0)
    counted = summarize([*RECORDS[:3], cut, no_output], window_s=10.0, count_unfinished=True)
    assert (
        plain.normalized_latency_s_per_token
        == summarize(RECORDS, window_s=10.0).normalized_latency_s_per_token
    )
    assert (plain.unfinished_counted, counted.unfinished_counted) == (0, 1)  # no output: left out
    # (10 − 5 − 1.5) / 15 = 0.2333 s/token beside 0.15, 0.10667, 0.22.
    expected_mean = (0.15 + 0.32 / 3 + 0.22 + 3.5 / 15) / 4
    assert counted.normalized_latency_s_per_token.mean == pytest.approx(expected_mean)
    assert counted.completed == 3


def test_the_run_record_has_exactly_the_schema_and_reads_back() -> None:
    run = RunRecord(
        tool="sim",
        policy="swap",
        workload="mixed",
        rate=2,
        duration_s=10,
        seed=1,
        summary=summarize(RECORDS, window_s=10.0),
        server=server_delta(STATS_BEFORE, STATS_AFTER),
        assumptions={"prompt_share": 0.4},
    )
    record = run.to_json()
    assert list(record) == [
        "tool", "policy", "workload", "rate", "duration_s", "seed", "submitted", "completed",
        "completed_per_s", "unfinished_counted", "normalized_latency_s_per_token", "ttft_s",
        "output_tokens_per_s", "server", "assumptions",
    ]  # fmt: skip
    assert list(run.summary.ttft_s.to_json()) == ["mean", "p50", "p90", "p99"]
    assert list(run.server.to_json()) == [
        "forward_tokens", "recomputed_tokens", "recompute_share", "recompute_time_share",
        "swap_out_blocks", "swap_in_blocks", "paused_device_block_seconds",
    ]  # fmt: skip
    assert isinstance(record["rate"], float) and record["completed"] == 3
    assert json.loads(json.dumps(record)) == record
    assert RunRecord.from_json(json.loads(json.dumps(record))) == dataclasses.replace(
        run, rate=2.0, duration_s=10.0
    )
    with pytest.raises(ValueError):
        dataclasses.replace(run, tool="bench")
    assert isinstance(run.server, ServerDelta)
