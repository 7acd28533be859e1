"""Pause expiry: a paused request whose tool result does not come in time ends and frees everything."""

from __future__ import annotations

import pytest

from scheduler_svc.admission import RequestError
from tests.scheduler.harness import Harness, generate_request


def _paused_request(h: Harness) -> int:
    rid = h.add(generate_request([1, 2, 3, 4, 5, 6, 7, 8, 9], max_tokens=20, script=[(3, "slow")]))
    h.run_until_paused(rid)
    return rid


def test_a_pause_expires_after_the_timeout_and_frees_its_blocks_on_device_and_host() -> None:
    h = Harness("swap", pause_timeout_s=10.0)
    rid = _paused_request(h)
    paused_at_s = h.now
    h.step()  # the swap-out is carried out: the context is on the host now
    assert h.scheduler.blocks.host.num_free < h.scheduler.blocks.host.num_total
    assert h.scheduler.next_pause_expiry_s() == paused_at_s + 10.0
    assert h.scheduler.expire_pauses(paused_at_s + 9.9) == []
    assert h.scheduler.expire_pauses(paused_at_s + 10.0) == [rid]
    assert rid not in h.scheduler.requests and h.scheduler.next_pause_expiry_s() is None
    h.run()  # the executor is told to forget it
    blocks = h.scheduler.blocks
    assert blocks.device.num_free == blocks.device.num_total and blocks.host.num_free == blocks.host.num_total
    with pytest.raises(RequestError) as late:
        h.resume(rid, [5])
    assert late.value.code == "NOT_FOUND"


def test_only_the_overdue_pauses_expire_in_pause_order() -> None:
    h = Harness("preserve", pause_timeout_s=5.0)
    first = _paused_request(h)
    h.step(dt=3.0)
    second = _paused_request(h)
    third = _paused_request(h)
    assert h.scheduler.expire_pauses(h.now) == [first]  # the first has waited longest
    assert set(h.scheduler.requests) == {second, third}
    assert h.scheduler.expire_pauses(h.now + 100.0) == [second, third]


def test_a_resumed_request_does_not_expire() -> None:
    h = Harness("preserve", pause_timeout_s=5.0)
    rid = _paused_request(h)
    h.resume(rid, [5])
    assert h.scheduler.expire_pauses(h.now + 100.0) == []
    h.run()
    assert h.finished(rid).finish_reason == "length"


def test_a_timeout_of_zero_never_expires() -> None:
    h = Harness("preserve")
    _paused_request(h)
    assert h.scheduler.expire_pauses(h.now + 1e9) == [] and h.scheduler.next_pause_expiry_s() is None
