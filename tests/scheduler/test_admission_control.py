"""Admission control: the expected queue wait decides, from the queue's tokens and the measured
rate, on the harness's fabricated clock (no timing)."""

from __future__ import annotations

import math

import pytest

from scheduler_svc.admission import RequestError
from scheduler_svc.admission_control import MAX_CALIBRATION, MIN_RETRY_AFTER_S, WINDOW_S, QueueWaitControl
from tests.scheduler.harness import Harness, generate_request

PROMPT = [7] * 60  # 60 tokens: about one iteration's budget of 64 in the harness


def test_a_control_with_no_bound_never_refuses() -> None:
    control = QueueWaitControl(0.0, fallback_tokens_per_s=1.0)
    control.added(10**9)
    control.check(0.0)
    assert not control.is_enabled


def test_nothing_is_refused_before_any_rate_is_known() -> None:
    control = QueueWaitControl(1.0)
    control.added(10**9)
    assert control.tokens_per_s is None and control.expected_wait_s(0.0) == 0.0
    control.check(0.0)


def test_the_fallback_rate_decides_until_a_backlog_is_measured() -> None:
    control = QueueWaitControl(2.0, fallback_tokens_per_s=100.0)
    control.added(200)
    control.check(0.0)  # exactly 2 s: admitted
    control.added(50)
    with pytest.raises(RequestError) as refused:
        control.check(0.0)
    assert refused.value.code == "RESOURCE_EXHAUSTED"
    assert refused.value.retry_after_s == pytest.approx(0.5)  # 2.5 s of work, 2 s allowed
    assert "retry in 0.50 s" in refused.value.message


def test_only_iterations_that_leave_a_backlog_measure_the_rate() -> None:
    control = QueueWaitControl(1.0, fallback_tokens_per_s=1000.0)
    control.scheduled(0.0, num_tokens_left=0)  # an idle queue: the rate is demand, not capacity
    control.completed(1.0, num_queue_tokens=5)
    assert control.tokens_per_s == 1000.0
    control.scheduled(1.0, num_tokens_left=100)
    control.completed(3.0, num_queue_tokens=40)  # 40 tokens in 2 s
    control.scheduled(3.0, num_tokens_left=60)
    control.completed(4.0, num_queue_tokens=10)  # busy throughout: measured from the last result
    assert control.tokens_per_s == pytest.approx(50 / 3)
    assert control.expected_wait_s(0.0) == pytest.approx(60 / (50 / 3))


def test_old_measurements_leave_the_window() -> None:
    control = QueueWaitControl(1.0)
    now = 0.0
    for tokens in [1] * 5 + [100] * int(WINDOW_S + 5):
        control.scheduled(now, num_tokens_left=1000)
        now += 1.0
        control.completed(now, num_queue_tokens=tokens)
    assert control.tokens_per_s == pytest.approx(100.0)


def test_a_queue_that_does_not_move_refuses_everyone_with_a_hint() -> None:
    control = QueueWaitControl(1.0, fallback_tokens_per_s=1000.0)
    control.scheduled(0.0, num_tokens_left=10)
    control.completed(2.0, num_queue_tokens=0)
    assert math.isinf(control.expected_wait_s(0.0))
    with pytest.raises(RequestError) as refused:
        control.check(0.0)
    assert refused.value.retry_after_s == WINDOW_S


def test_a_request_not_started_for_longer_than_the_bound_refuses_newcomers_whatever_the_tokens() -> None:
    control = QueueWaitControl(5.0, fallback_tokens_per_s=1e9)  # the tokens say: no wait at all
    control.added(100, arrival_s=10.0)
    control.check(14.0)
    with pytest.raises(RequestError) as refused:
        control.check(16.0)  # the oldest request waiting for its first token has waited 6 s
    assert refused.value.retry_after_s == pytest.approx(1.0)
    control.scheduled(16.0, num_tokens_left=50, oldest_unstarted_s=15.0)  # it started; the next is younger
    control.check(16.0)
    assert control.expected_wait_s(16.0) == pytest.approx(1.0)


def test_context_beyond_the_device_pool_waits_for_finishing_requests_to_free_theirs() -> None:
    control = QueueWaitControl(5.0)
    control.scheduled(0.0, num_tokens_left=0, num_excess_tokens=3000)
    control.check(0.0)  # nothing has finished yet: the rate of freeing is unknown
    control.finished(1, 1.0, num_context_tokens=400)
    control.finished(2, 3.0, num_context_tokens=600)  # 1000 tokens freed over 2 s
    assert control.freed_tokens_per_s(3.0) == pytest.approx(500.0)
    assert control.expected_wait_s(3.0) == pytest.approx(6.0)
    with pytest.raises(RequestError) as refused:
        control.check(3.0)
    assert "3000 tokens of context beyond the device pool" in refused.value.message
    control.scheduled(3.0, num_tokens_left=0, num_excess_tokens=2000)
    control.check(3.0)  # 4 s
    assert control.freed_tokens_per_s(1.0 + WINDOW_S + 1.5) == pytest.approx(600 / WINDOW_S)  # 400 left


def test_the_core_refuses_when_the_queue_ahead_is_too_long_and_admits_again_once_it_drains() -> None:
    # The harness's cost model: a full budget of 64 tokens per 1 s iteration. Bound: 5 s.
    h = Harness(max_queue_wait_s=5.0)
    admitted = [h.add(generate_request(PROMPT, max_tokens=2)) for _ in range(5)]  # 300 tokens: 4.7 s
    h.add(generate_request(PROMPT, max_tokens=2))  # 360 tokens waiting now
    with pytest.raises(RequestError) as refused:
        h.add(generate_request(PROMPT, max_tokens=2))
    assert refused.value.code == "RESOURCE_EXHAUSTED" and "overloaded" in refused.value.message
    assert refused.value.retry_after_s == pytest.approx(360 / 64 - 5.0)
    assert len(h.scheduler.requests) == 6  # a refusal admits nothing
    h.run()
    assert all(h.finished(rid).finish_reason == "length" for rid in admitted)
    h.add(generate_request(PROMPT, max_tokens=2))


def test_the_measured_rate_replaces_the_cost_model_once_the_queue_has_backlog() -> None:
    # Iterations take 4 s on this clock, not the cost model's 1 s: the queue drains 4x slower.
    h = Harness(max_queue_wait_s=10.0)
    for _ in range(8):
        h.add(generate_request(PROMPT, max_tokens=1))
    for _ in range(3):
        h.step(dt=4.0)
    rate = h.scheduler.admission.tokens_per_s
    assert rate is not None and rate == pytest.approx(64 / 4, rel=0.2)
    waiting = h.scheduler.admission.num_tokens_waiting
    assert waiting / 64 < 10.0 < waiting / rate  # a 1 s iteration would say it fits; the measurement says no
    with pytest.raises(RequestError):
        h.add(generate_request(PROMPT, max_tokens=1))


def test_the_live_cap_stays_a_hard_limit_with_a_retry_hint() -> None:
    h = Harness()
    h.scheduler.config = h.scheduler.config.__class__(max_live_requests=1)
    h.add(generate_request())
    with pytest.raises(RequestError) as refused:
        h.add(generate_request())
    assert refused.value.code == "RESOURCE_EXHAUSTED" and refused.value.retry_after_s is not None
    assert refused.value.retry_after_s >= MIN_RETRY_AFTER_S


def test_the_core_refuses_when_requests_wait_for_memory_however_few_tokens_are_queued() -> None:
    # 16 blocks of 4 tokens: the first request's context fills the device for its 20 tokens of
    # decoding, so the second waits for memory, not for the token budget.
    h = Harness(max_queue_wait_s=5.0, num_device_blocks=16, max_model_len=64)
    first = h.add(generate_request([7] * 40, max_tokens=20))
    second = h.add(generate_request([8] * 30, max_tokens=2))
    for _ in range(7):
        h.step()
    assert not h.tokens(second)  # still waiting for blocks
    assert h.scheduler.admission.num_tokens_waiting / 64 < 5.0  # the tokens alone would admit
    with pytest.raises(RequestError) as refused:
        h.add(generate_request([9] * 4, max_tokens=2))
    assert refused.value.code == "RESOURCE_EXHAUSTED"
    h.run()
    assert h.finished(first).finish_reason == h.finished(second).finish_reason == "length"
    h.add(generate_request([9] * 4, max_tokens=2))  # drained: admitted again


def test_the_estimate_is_scaled_up_by_how_much_longer_started_requests_waited() -> None:
    control = QueueWaitControl(10.0, fallback_tokens_per_s=100.0)
    control.admitted(1, num_tokens=200, now_s=0.0)  # estimated: 0 s (nothing ahead of it)
    control.admitted(2, num_tokens=200, now_s=0.0)  # estimated: 2 s
    control.admitted(3, num_tokens=200, now_s=0.0)  # estimated: 4 s
    assert control.calibration == 1.0
    control.started(2, wait_s=6.0)
    control.started(3, wait_s=12.0)  # 18 s waited against 6 s estimated
    assert control.calibration == pytest.approx(3.0)
    assert control.expected_wait_s(0.0) == pytest.approx(3.0 * 6.0)
    control.started(1, wait_s=100.0)
    assert control.calibration == MAX_CALIBRATION


def test_waits_shorter_than_estimated_never_scale_the_estimate_down() -> None:
    control = QueueWaitControl(10.0, fallback_tokens_per_s=100.0)
    control.admitted(1, num_tokens=200, now_s=0.0)
    control.admitted(2, num_tokens=200, now_s=0.0)
    control.started(2, wait_s=0.5)
    control.finished(1, None, 0)  # aborted before it started: no sample
    assert control.calibration == 1.0 and control.expected_wait_s(0.0) == pytest.approx(4.0)
