"""Pause expiry: a paused request whose tool result does not come within a bound is ended.

A client that never answers an interception would otherwise hold the request's blocks (device
or host) and its live slot forever. The paused requests are kept in the order they paused (a
dict's insertion order, pause times from one monotonic clock), so the expired ones are a prefix:
finding them costs O(expired + 1) per iteration, not O(paused).
"""

from __future__ import annotations

from collections.abc import Mapping

from scheduler_svc.request import Request


def _paused_at_s(request: Request) -> float:
    assert request.pending_call is not None, f"request {request.request_id} is not paused"
    return request.pending_call.paused_at_s


def expired_ids(paused: Mapping[int, Request], now_s: float, timeout_s: float) -> list[int]:
    """The ids of requests in `paused` (in pause order) paused for at least `timeout_s` at
    `now_s`; none if timeout_s is 0 (no expiry)."""
    if timeout_s <= 0:
        return []
    ids = []
    for request_id, request in paused.items():
        if now_s - _paused_at_s(request) < timeout_s:
            break
        ids.append(request_id)
    return ids


def next_expiry_s(paused: Mapping[int, Request], timeout_s: float) -> float | None:
    """When (on the pause clock) the oldest pause expires; None with no expiry or nothing paused."""
    if timeout_s <= 0 or not paused:
        return None
    return _paused_at_s(next(iter(paused.values()))) + timeout_s
