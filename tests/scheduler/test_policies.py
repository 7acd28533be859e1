"""What each policy does with a paused request's context, and with its queue place on resume."""

from __future__ import annotations

import pytest

from scheduler_svc.events import Intercepted, session_events
from scheduler_svc.policies import POLICIES, create_policy
from scheduler_svc.queues import WaitingPlace
from scheduler_svc.stats_render import stats_proto
from svc_common.step_wire import unpack_table_updates, unpack_work
from tests.scheduler.harness import Harness, generate_request, ids

# A request intercepted after 3 generated tokens: 8 tokens in its context, the first 7 computed
# (in two blocks of 4), the third generated token not yet.
PROMPT, SCRIPT = [1, 2, 3, 4, 5], [(3, "t")]


def test_registry() -> None:
    assert set(POLICIES) == {
        "vllm",
        "improved-discard",
        "preserve",
        "swap",
        "infercept",
        "infercept-authors",
        "vllm-apc",
        "continuum",
        "lazy-swap",
        "ideal",
    }
    assert create_policy("swap").name == "swap"
    with pytest.raises(ValueError, match="unknown policy 'nope'"):
        create_policy("nope")


@pytest.mark.parametrize("policy", ["vllm", "improved-discard"])
def test_discard_frees_the_device_blocks_and_recomputes_after_the_call(policy: str) -> None:
    h = Harness(policy, num_device_blocks=8)
    rid = h.add(generate_request(PROMPT, max_tokens=6, script=SCRIPT))
    h.step()
    assert stats_proto(h.scheduler).device_blocks_free == 6
    call = h.run_until_paused(rid)
    assert call.context_action == "discard"
    assert stats_proto(h.scheduler).device_blocks_free == 8
    assert not h.schedule().work.request_ids  # nothing to do while the tool runs
    h.resume(rid, [9, 9])
    resumed = h.events[rid][-1].resumed
    assert (resumed.num_device_blocks_kept, resumed.num_blocks_swapped_in, resumed.num_recomputed_tokens) == (
        0,
        0,
        7,
    )
    work = h.work(h.step(), rid)
    assert work is not None and work.start_position == 0 and len(work.token_ids) == 10
    h.run()
    assert h.finished(rid).usage.recomputed_tokens == 7
    assert stats_proto(h.scheduler).paused_device_block_seconds == 0


def test_preserve_keeps_the_device_blocks() -> None:
    h = Harness("preserve", num_device_blocks=8)
    rid = h.add(generate_request(PROMPT, max_tokens=6, script=SCRIPT))
    call = h.run_until_paused(rid)
    assert call.context_action == "preserve"
    table = list(h.scheduler.blocks.layout(rid).device)
    assert len(table) == 2 and stats_proto(h.scheduler).device_blocks_free == 6
    h.schedule()
    h.resume(rid, [9, 9])
    resumed = h.events[rid][-1].resumed
    assert (resumed.num_device_blocks_kept, resumed.num_recomputed_tokens) == (2, 0)
    plan = h.step()
    work = h.work(plan, rid)
    assert work is not None and work.start_position == 7 and len(work.token_ids) == 3
    # The kept blocks stay at the front of the executor's table.
    assert all(
        u.num_kept_blocks == 2 for u in unpack_table_updates(plan.block_table_updates) if u.request_id == rid
    )
    assert h.scheduler.blocks.layout(rid).device[:2] == table
    h.run()
    assert h.finished(rid).usage.recomputed_tokens == 0


def test_swap_out_in_the_next_plan_and_swap_in_where_the_request_computes_again() -> None:
    # Four device blocks: while the paused context is on the host, another request reuses its blocks,
    # so the fake executor only reads the right tokens if the swaps really moved them.
    h = Harness("swap", num_device_blocks=4, num_host_blocks=4)
    rid = h.add(generate_request(PROMPT, max_tokens=6, script=SCRIPT))
    call = h.run_until_paused(rid)
    assert call.context_action == "swap"
    device_table = list(h.executor.tables[rid])
    host_segment = list(h.scheduler.blocks.layout(rid).host)
    assert len(device_table) == 2 and len(host_segment) == 2
    assert not any(ids(p.swap_out.src_block_ids) for p in h.plans)  # nothing moved yet
    other = h.add(generate_request([7] * 12, max_tokens=2))  # will need all four device blocks
    plan = h.step()
    assert ids(plan.swap_out.src_block_ids) == device_table
    assert ids(plan.swap_out.dst_block_ids) == host_segment
    assert h.work(plan, rid) is None
    stats = stats_proto(h.scheduler)
    assert (stats.swap_out_blocks, stats.host_blocks_free) == (2, 2)
    h.run()  # `other` runs to its end on the device blocks the swap freed
    assert h.finished(other).finish_reason == "length"
    h.resume(rid, [9, 9])
    assert h.events[rid][-1].resumed.num_blocks_swapped_in == 2
    assert not any(ids(p.swap_in.src_block_ids) for p in h.plans)
    plan = h.step()
    assert ids(plan.swap_in.src_block_ids) == host_segment
    new_table = h.executor.tables[rid]
    assert ids(plan.swap_in.dst_block_ids) == new_table[:2]
    work = h.work(plan, rid)
    assert work is not None and work.start_position == 7  # no recomputation
    assert not ids(h.step().swap_in.src_block_ids)  # once
    h.run()
    finished = h.finished(rid)
    assert finished.finish_reason == "length" and finished.usage.recomputed_tokens == 0
    stats = stats_proto(h.scheduler)
    assert (stats.swap_in_blocks, stats.host_blocks_free, stats.device_blocks_free) == (2, 4, 4)


def test_swap_out_and_swap_in_in_the_same_plan() -> None:
    # The tool returns before the next iteration: the plan carries both moves, out first.
    h = Harness("swap", num_device_blocks=8, num_host_blocks=4)
    rid = h.add(generate_request(PROMPT, max_tokens=6, script=SCRIPT))
    h.run_until_paused(rid)
    host_segment = list(h.scheduler.blocks.layout(rid).host)
    h.resume(rid, [9])
    plan = h.step()
    assert ids(plan.swap_out.dst_block_ids) == host_segment == ids(plan.swap_in.src_block_ids)
    work = h.work(plan, rid)
    assert work is not None and work.start_position == 7
    h.run()
    assert h.finished(rid).usage.recomputed_tokens == 0
    assert stats_proto(h.scheduler).host_blocks_free == 4


def test_swap_falls_back_to_discard_when_the_host_pool_is_too_small() -> None:
    h = Harness("swap", num_device_blocks=8, num_host_blocks=1)
    rid = h.add(generate_request(PROMPT, max_tokens=6, script=SCRIPT))
    assert h.run_until_paused(rid).context_action == "discard"
    plan = h.step()
    assert not ids(plan.swap_out.src_block_ids)
    stats = stats_proto(h.scheduler)
    assert (stats.swap_out_blocks, stats.device_blocks_free, stats.host_blocks_free) == (0, 8, 1)
    h.resume(rid, [])
    h.run()
    assert h.finished(rid).usage.recomputed_tokens == 7


@pytest.mark.parametrize(("policy", "first"), [("vllm", "newer"), ("improved-discard", "resumed")])
def test_queue_place_on_resume(policy: str, first: str) -> None:
    h = Harness(policy, max_batched_tokens=8)
    resumed = h.add(generate_request([1] * 4, max_tokens=5, script=[(1, "t")]))
    h.run_until_paused(resumed)  # arrived at 0, paused at 1
    newer = h.add(generate_request([2] * 12, max_tokens=5))  # arrives at 1
    h.step()  # newer's first chunk
    h.resume(resumed, [3, 3, 3])  # at 2: 8 tokens to recompute and compute
    # vLLM 0.2 never moves a request's arrival time: it stays its FCFS priority once it runs.
    assert h.scheduler.requests[resumed].arrival_s == 0.0
    plan = h.step()
    order = [w.request_id for w in unpack_work(plan.work)]
    assert order[0] == {"newer": newer, "resumed": resumed}[first]
    if first == "newer":  # vllm: at the back; the newer prompt finishes its chunk, it gets the rest
        assert [len(w.token_ids) for w in unpack_work(plan.work)] == [4, 4]
    else:  # improved-discard: at the front, it takes the whole budget
        assert order == [resumed] and len(unpack_work(plan.work)[0].token_ids) == 8


@pytest.mark.parametrize(
    ("policy", "on_resume", "on_preempt", "takes_paused"),
    [
        ("vllm", WaitingPlace.BACK, WaitingPlace.FRONT, False),
        ("improved-discard", WaitingPlace.FRONT, WaitingPlace.FRONT, False),
        ("preserve", WaitingPlace.FRONT, WaitingPlace.FRONT, False),
        ("swap", WaitingPlace.FRONT, WaitingPlace.FRONT, False),
        ("infercept", WaitingPlace.ARRIVAL, WaitingPlace.ARRIVAL, True),
    ],
)
def test_the_baselines_keep_vllm_0_2s_queue_places(
    policy: str, on_resume: WaitingPlace, on_preempt: WaitingPlace, takes_paused: bool
) -> None:
    created = create_policy(policy)
    assert (created.waiting_place_on_resume, created.waiting_place_on_preempt) == (on_resume, on_preempt)
    assert created.preempts_paused_contexts is takes_paused


def test_a_baseline_preempts_a_running_request_not_a_newer_paused_context() -> None:
    # Eight blocks of 4 tokens. `paused`, the newest, holds a block through its call while the two
    # running requests grow until memory runs out: vLLM 0.2 takes the newer running request's
    # blocks (its paused contexts are in no queue it preempts from); infercept may take the paused.
    for policy, victim in (("preserve", "running"), ("infercept", "paused")):
        h = Harness(policy, num_device_blocks=8, max_model_len=64)
        old = h.add(generate_request([1] * 4, max_tokens=40))
        running = h.add(generate_request([2] * 4, max_tokens=40))
        paused = h.add(generate_request([3] * 4, max_tokens=6, script=[(1, "t")]))
        h.run_until_paused(paused)
        for _ in range(16):
            h.step()
        assert stats_proto(h.scheduler).preemptions >= 1, policy
        paused_blocks = len(h.scheduler.blocks.layout(paused).device)
        if victim == "running":
            assert paused_blocks == 1 and h.scheduler.requests[running].num_recomputed > 0
        else:
            assert paused_blocks == 0
        assert len(h.scheduler.blocks.layout(old).device) > 1


@pytest.mark.parametrize(("policy", "expected"), [("preserve", 2 * 3.0), ("vllm", 0.0), ("swap", 0.0)])
def test_paused_device_block_seconds_counts_preserved_pauses_only(policy: str, expected: float) -> None:
    h = Harness(policy, num_device_blocks=16)
    rid = h.add(generate_request(PROMPT, max_tokens=6, script=SCRIPT))
    h.add(generate_request(max_tokens=30))  # keeps iterations going while `rid` is paused
    h.run_until_paused(rid)  # paused at the update of the iteration at h.now
    for _ in range(3):
        h.step()  # one second each
    h.resume(rid, [])
    h.run()
    assert stats_proto(h.scheduler).paused_device_block_seconds == pytest.approx(expected)


def test_paused_device_block_seconds_counts_a_pause_with_no_iterations_in_it() -> None:
    # The only request is paused, so the server runs no iteration until its tool returns.
    h = Harness("preserve", num_device_blocks=16)
    rid = h.add(generate_request(PROMPT, max_tokens=6, script=SCRIPT))
    h.run_until_paused(rid)
    assert not h.scheduler.has_work()
    h.now += 10.0  # the tool takes ten seconds
    h.resume(rid, [])
    h.run()
    assert stats_proto(h.scheduler).paused_device_block_seconds == pytest.approx(2 * 10.0)


def test_paused_device_block_seconds_starts_at_the_update_that_paused() -> None:
    h = Harness("preserve", num_device_blocks=16)
    rid = h.add(generate_request(PROMPT, max_tokens=6, script=SCRIPT))
    h.add(generate_request(max_tokens=30))
    for _ in range(2):
        h.step()
    plan = h.schedule()  # at 3.0; the forward takes half a second
    result = h.executor.run(plan)
    events = h.scheduler.update(plan, result, h.now + 0.5)
    assert any(isinstance(e, Intercepted) and e.request_id == rid for e in session_events(events))
    h.schedule()  # at 4.0: two blocks held for 0.5 s
    assert stats_proto(h.scheduler).paused_device_block_seconds == pytest.approx(2 * 0.5)


def test_abort_cancels_a_swap_out_not_yet_sent() -> None:
    h = Harness("swap", num_device_blocks=8, num_host_blocks=4)
    rid = h.add(generate_request(PROMPT, max_tokens=6, script=SCRIPT))
    h.run_until_paused(rid)
    assert stats_proto(h.scheduler).host_blocks_free == 2
    h.abort(rid)
    plan = h.step()
    assert not ids(plan.swap_out.src_block_ids)  # the blocks it would copy are no longer its own
    assert list(plan.forget_request_ids) == [rid]
    stats = stats_proto(h.scheduler)
    assert (stats.device_blocks_free, stats.host_blocks_free) == (8, 4)


def test_abort_of_a_swapped_out_request_frees_its_host_blocks() -> None:
    h = Harness("swap", num_device_blocks=8, num_host_blocks=4)
    rid = h.add(generate_request(PROMPT, max_tokens=6, script=SCRIPT))
    h.run_until_paused(rid)
    assert len(ids(h.step().swap_out.src_block_ids)) == 2
    h.abort(rid)
    assert stats_proto(h.scheduler).host_blocks_free == 4
    assert list(h.step().forget_request_ids) == [rid]
