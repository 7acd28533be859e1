"""A client that disconnects mid-generation or mid-interception leaves nothing behind."""

from __future__ import annotations

import time

import grpc

from infercept.v1 import generation_pb2 as gen
from infercept.v1 import generation_pb2_grpc
from tests.e2e.raw_session import RawSession, generate_event
from tooling.launcher import Stack


def _wait_until_idle(address: str, timeout_s: float = 20.0) -> gen.Stats:
    with grpc.insecure_channel(address) as channel:
        stub = generation_pb2_grpc.GenerationStub(channel)
        deadline = time.monotonic() + timeout_s
        while True:
            stats = stub.GetStats(gen.StatsRequest())
            live = sum(stats.requests_by_state[s] for s in ("waiting", "running", "paused"))
            idle = live == 0 and stats.device_blocks_free == stats.device_blocks_total
            if (idle and stats.host_blocks_free == stats.host_blocks_total) or time.monotonic() > deadline:
                return stats


def test_disconnect_mid_generation_frees_everything(stack: Stack) -> None:
    before = _wait_until_idle(stack.scheduler_address)
    session = RawSession(stack.scheduler_address)
    session.send(generate_event(list(range(40)), max_tokens=1500))
    for _ in range(5):
        session.until("tokens")
    session.close()
    after = _wait_until_idle(stack.scheduler_address)
    assert after.device_blocks_free == after.device_blocks_total
    assert after.aborted_requests == before.aborted_requests + 1


def test_disconnect_mid_interception_frees_everything(stack: Stack) -> None:
    before = _wait_until_idle(stack.scheduler_address)
    session = RawSession(stack.scheduler_address)
    script = [gen.ScriptedCall(after_tokens=3, tool="slow", expected_duration_s=60.0)]
    session.send(generate_event(list(range(100)), max_tokens=50, script=script))
    intercepted = session.until("intercepted").intercepted
    assert intercepted.context_action == "swap"  # the module's stack runs the swap policy
    session.close()
    after = _wait_until_idle(stack.scheduler_address)
    assert (after.device_blocks_free, after.host_blocks_free) == (
        after.device_blocks_total,
        after.host_blocks_total,
    )
    assert after.requests_by_state["paused"] == 0
    assert after.aborted_requests == before.aborted_requests + 1
