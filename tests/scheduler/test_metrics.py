"""The scheduler's request timer (the paper's latency metrics from a session's events) and the
stats log line, on hand-made events and counters."""

from __future__ import annotations

import pytest

from infercept.v1 import generation_pb2 as gen
from scheduler_svc.metrics import SchedulerMetrics
from scheduler_svc.stats_log import stats_line


def sample(metrics: SchedulerMetrics, name: str, suffix: str) -> float:
    value = metrics.registry.get_sample_value(name + suffix)
    assert value is not None, name
    return value


def tokens(*ids: int) -> gen.ServerEvent:
    return gen.ServerEvent(tokens=gen.TokenDelta(token_ids=list(ids)))


def test_the_timer_leaves_tool_time_out_of_the_normalized_latency_and_the_time_per_token() -> None:
    metrics = SchedulerMetrics()
    timer = metrics.request_timer(arrival_s=100.0)
    timer.on_event(gen.ServerEvent(accepted=gen.Accepted(request_id="x")), 100.0)
    timer.on_event(tokens(1), 101.0)  # TTFT 1 s
    timer.on_event(tokens(2), 102.0)
    timer.on_event(gen.ServerEvent(intercepted=gen.Intercepted(tool="t")), 102.0)
    timer.on_event(gen.ServerEvent(resumed=gen.Resumed(num_returned_tokens=2)), 106.0)  # 4 s in the tool
    timer.on_event(tokens(3), 107.0)
    usage = gen.Usage(generated_tokens=3, returned_tokens=2)
    timer.on_event(gen.ServerEvent(finished=gen.Finished(finish_reason="length", usage=usage)), 108.0)

    assert sample(metrics, "infercept_request_ttft_seconds", "_sum") == pytest.approx(1.0)
    assert sample(metrics, "infercept_request_end_to_end_seconds", "_sum") == pytest.approx(8.0)
    # (8 s - 4 s in the tool) / (3 generated + 2 returned)
    assert sample(metrics, "infercept_request_normalized_latency_seconds", "_sum") == pytest.approx(0.8)
    # (108 - 101 - 4) s over the 2 tokens after the first
    assert sample(metrics, "infercept_request_time_per_output_token_seconds", "_sum") == pytest.approx(1.5)
    finished = metrics.registry.get_sample_value("infercept_requests_finished_total", {"reason": "length"})
    assert finished == 1.0


def test_a_request_aborted_before_its_first_token_counts_only_end_to_end() -> None:
    metrics = SchedulerMetrics()
    timer = metrics.request_timer(arrival_s=0.0)
    timer.on_event(gen.ServerEvent(finished=gen.Finished(finish_reason="abort")), 2.0)
    assert sample(metrics, "infercept_request_end_to_end_seconds", "_count") == 1.0
    assert sample(metrics, "infercept_request_ttft_seconds", "_count") == 0.0
    assert sample(metrics, "infercept_request_time_per_output_token_seconds", "_count") == 0.0


def test_the_stats_line_gives_counters_since_the_last_line_and_gauges_now() -> None:
    before = gen.Stats(decode_tokens=100, iterations=10, requests_by_state={"finished": 4})
    now = gen.Stats(
        decode_tokens=300,
        prompt_tokens=100,
        iterations=30,
        swap_out_blocks=5,
        device_blocks_free=7,
        requests_by_state={"finished": 6, "waiting": 3, "paused": 1},
    )
    line = stats_line(before, now, interval_s=10.0)
    assert line["iterations"] == 20 and line["decode_tokens"] == 200 and line["prompt_tokens"] == 100
    assert line["tokens_per_s"] == 30.0
    assert line["finished_requests"] == 2 and line["swap_out_blocks"] == 5
    assert (line["waiting"], line["running"], line["paused"]) == (3, 0, 1)
    assert line["device_blocks_free"] == 7
