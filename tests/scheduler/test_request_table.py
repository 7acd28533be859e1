"""The request table: from every state a request can be in, finishing it leaves no trace in any
index and frees every block; dropping its context frees its blocks and cancels what its context
was doing, and the request still runs to its end (the fake executor checks every KV read)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from scheduler_svc.request import FinishReason, Status
from tests.scheduler.harness import Harness, generate_request

PROMPT = [1, 2, 3, 4, 5, 6, 7, 8, 9]  # three blocks of four
SCRIPT = [(3, "t")]

Setup = Callable[[], tuple[Harness, int]]


def waiting() -> tuple[Harness, int]:
    h = Harness()
    return h, h.add(generate_request(PROMPT, max_tokens=6, script=SCRIPT))


def chunking() -> tuple[Harness, int]:
    """Its prompt partly computed (the executor knows it), the rest still waiting."""
    h = Harness(max_batched_tokens=4)
    rid = h.add(generate_request(PROMPT, max_tokens=6, script=SCRIPT))
    h.step()
    return h, rid


def ready() -> tuple[Harness, int]:
    h, rid = waiting()
    h.step()
    return h, rid


def paused_under(policy: str) -> tuple[Harness, int]:
    """Paused by its script under `policy` (preserve: held; improved-discard: freed; swap: its
    swap-out decided, not yet in a plan)."""
    h = Harness(policy)
    rid = h.add(generate_request(PROMPT, max_tokens=6, script=SCRIPT))
    h.run_until_paused(rid)
    return h, rid


def paused_swap_pending() -> tuple[Harness, int]:
    return paused_under("swap")


def paused_swapped_out() -> tuple[Harness, int]:
    h, rid = paused_swap_pending()
    h.step()  # the plan copies it out
    return h, rid


def swapping_in() -> tuple[Harness, int]:
    """Resumed with its context on the host, not yet brought back."""
    h, rid = paused_swapped_out()
    h.resume(rid, [9, 9])
    return h, rid


STATES: dict[str, Setup] = {
    "waiting": waiting,
    "chunking": chunking,
    "ready": ready,
    "paused-preserved": lambda: paused_under("preserve"),
    "paused-discarded": lambda: paused_under("improved-discard"),
    "paused-swap-pending": paused_swap_pending,
    "paused-swapped-out": paused_swapped_out,
    "swapping-in": swapping_in,
}


def assert_in_no_index(h: Harness, rid: int) -> None:
    table = h.scheduler.table
    assert rid not in table.requests
    assert rid not in table.queues
    assert rid not in table.paused and table.paused.num_held_blocks == 0
    assert rid not in table.swapping_in
    assert rid not in table.pending_swap_out
    assert rid not in h.scheduler.blocks.layouts


def assert_every_block_free(h: Harness) -> None:
    blocks = h.scheduler.blocks
    blocks.check_invariants()
    assert blocks.device.num_free == blocks.device.num_total
    assert blocks.host.num_free == blocks.host.num_total


def test_the_setups_reach_the_states_they_name() -> None:
    table_of = {name: setup() for name, setup in STATES.items()}
    h, rid = table_of["chunking"]
    assert rid in h.scheduler.table.queues and 0 < h.scheduler.requests[rid].num_computed < len(PROMPT)
    h, rid = table_of["ready"]
    assert h.scheduler.requests[rid].num_pending == 1 and h.scheduler.table.queues.ready()
    h, rid = table_of["paused-preserved"]
    assert h.scheduler.table.paused.num_held_blocks == 3
    h, rid = table_of["paused-discarded"]
    assert rid in h.scheduler.table.paused and not h.scheduler.blocks.layouts[rid].device
    h, rid = table_of["paused-swap-pending"]
    assert rid in h.scheduler.table.pending_swap_out
    h, rid = table_of["paused-swapped-out"]
    assert not h.scheduler.table.pending_swap_out and h.scheduler.blocks.layouts[rid].host
    h, rid = table_of["swapping-in"]
    assert rid in h.scheduler.table.swapping_in and h.scheduler.requests[rid].status is Status.ACTIVE


@pytest.mark.parametrize("state", STATES)
def test_finishing_from_any_state_leaves_no_trace_and_frees_every_block(state: str) -> None:
    h, rid = STATES[state]()
    request = h.scheduler.requests[rid]
    known = request.executor_known
    h.abort(rid)
    assert request.status is Status.FINISHED and request.finish_reason is FinishReason.ABORT
    assert h.finished(rid).finish_reason == "abort"
    assert_in_no_index(h, rid)
    assert (rid in h.scheduler.table.pending_forget) == known
    plan = h.schedule()  # tells the executor; host blocks read by a swap-in are reusable after it
    assert list(plan.forget_request_ids) == ([rid] if known else [])
    assert not plan.work.request_ids and not plan.swap_out.src_block_ids
    assert_every_block_free(h)
    assert not h.scheduler.has_work()


@pytest.mark.parametrize("state", STATES)
def test_dropping_the_context_from_any_state_frees_it_and_the_request_still_ends_right(state: str) -> None:
    h, rid = STATES[state]()
    request = h.scheduler.requests[rid]
    table = h.scheduler.table
    table.drop_context(request)
    layout = h.scheduler.blocks.layouts[rid]
    assert not layout.device and not layout.host and request.num_computed == 0
    assert rid not in table.swapping_in and rid not in table.pending_swap_out
    assert table.paused.num_held_blocks == 0
    if request.status is Status.PAUSED:
        assert rid in table.paused and rid not in table.queues
    else:
        assert rid in table.queues and not table.queues.ready()  # it waits to recompute
    while rid in h.scheduler.requests:  # the fake executor checks every KV read on the way
        if request.status is Status.PAUSED:
            h.resume(rid, [9, 9])
        h.run()
    assert h.finished(rid).finish_reason == "length" and len(h.tokens(rid)) == 6
    assert_in_no_index(h, rid)
    h.schedule()
    assert_every_block_free(h)


def test_a_finished_request_is_refused_by_every_later_input() -> None:
    h, rid = paused_under("preserve")
    h.abort(rid)
    for call in (
        lambda: h.scheduler.resume(rid, [1], h.now),
        lambda: h.scheduler.abort(rid),
        lambda: h.scheduler.tool_started(rid, 1.0),
    ):
        with pytest.raises(Exception, match=f"no live request {rid}"):
            call()
