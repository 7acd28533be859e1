"""The executor's lease: one scheduler at a time; a broken stream or the timeout frees it."""

from __future__ import annotations

import pytest

from executor_svc.lease import Lease, LeaseHeld


class Clock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def test_a_second_scheduler_is_refused_while_the_first_has_a_stream_open() -> None:
    clock = Clock()
    lease = Lease(timeout_s=5.0, clock=clock)
    lease.acquire("a")
    lease.open_stream("a")
    clock.now_s = 100.0  # the timeout does not end a lease whose stream is open
    with pytest.raises(LeaseHeld):
        lease.acquire("b")
    with pytest.raises(LeaseHeld):
        lease.open_stream("b")
    lease.acquire("a")  # the holder resets as often as it likes
    lease.open_stream("a")  # and reconnects while its old stream is still closing
    lease.close_stream("a")
    with pytest.raises(LeaseHeld):
        lease.acquire("b")
    lease.close_stream("a")  # its last stream broke: the executor is free at once
    lease.acquire("b")
    assert lease.holder == "b"


def test_a_holder_without_a_stream_keeps_the_executor_only_until_the_timeout() -> None:
    clock = Clock()
    lease = Lease(timeout_s=5.0, clock=clock)
    lease.acquire("a")
    clock.now_s = 4.0
    with pytest.raises(LeaseHeld):
        lease.acquire("b")
    clock.now_s = 5.5
    lease.acquire("b")
    lease.close_stream("a")  # a late stream end of the old holder changes nothing
    assert lease.holder == "b"


def test_anonymous_callers_get_one_stream_at_a_time() -> None:
    lease = Lease()
    lease.open_stream("")
    with pytest.raises(LeaseHeld):
        lease.open_stream("")
    lease.acquire("")  # an anonymous Reset while its stream is open (tools, tests)
    lease.close_stream("")
    lease.open_stream("")
