"""StepPlans as diffs: a request's sampling is sent once, its block table only when it changes."""

from __future__ import annotations

from infercept.v1 import executor_pb2 as pb
from scheduler_svc.resume import effective_seed
from svc_common.step_wire import unpack_table_updates
from tests.scheduler.harness import Harness, generate_request


def table_updates(plan: pb.StepPlan, request_id: int) -> list[tuple[int, list[int]]]:
    return [
        (u.num_kept_blocks, list(u.appended_block_ids))
        for u in unpack_table_updates(plan.block_table_updates)
        if u.request_id == request_id
    ]


def test_new_request_is_sent_once_with_its_sampling() -> None:
    h = Harness()
    rid = h.add(generate_request(max_tokens=4, temperature=0.5, top_k=7, seed=11))
    first = h.step()
    assert [n.request_id for n in first.new_requests] == [rid]
    sampling = first.new_requests[0].sampling
    assert (sampling.temperature, sampling.top_p, sampling.top_k, sampling.seed) == (0.5, 1.0, 7, 11)
    h.run()
    assert all(not plan.new_requests for plan in h.plans[1:])


def test_unseeded_request_sends_the_seed_the_server_chose_for_it() -> None:
    h = Harness()
    rid = h.add(generate_request())
    sampling = h.step().new_requests[0].sampling
    assert sampling.HasField("seed") and sampling.seed == effective_seed(rid)


def test_block_table_is_sent_as_appended_blocks_only_when_it_grows() -> None:
    h = Harness(max_batched_tokens=64)
    rid = h.add(generate_request([1] * 6, max_tokens=8))  # positions 0..12 computed: 4 blocks
    updates = []
    for _ in range(8):
        plan = h.step()
        updates.append(table_updates(plan, rid))
    table = h.executor.tables[rid]
    assert updates[0] == [(0, table[:2])]  # the prompt: positions 0..5
    # Decode steps at positions 6, 7 fit in block 1; position 8 needs block 2, position 12 block 3.
    assert updates[1:] == [[], [], [(2, [table[2]])], [], [], [], [(3, [table[3]])]]
    # Every plan's work token ids are exactly the tokens at those positions.
    request_tokens = h.tokens(rid)
    decode = [list(w.token_ids) for p in h.plans[1:] if (w := h.work(p, rid)) is not None]
    assert decode == [[t] for t in request_tokens[:7]]


def test_a_dropped_context_replaces_the_table_from_the_first_changed_block() -> None:
    h = Harness("vllm", num_device_blocks=16)
    other = h.add(generate_request([2] * 4, max_tokens=40))  # holds blocks across the pause
    rid = h.add(generate_request([1] * 6, max_tokens=8, script=[(1, "t")]))
    h.run_until_paused(rid)
    old_table = list(h.executor.tables[rid])
    h.step()
    h.resume(rid, [])
    plan = h.step()
    kept, appended = table_updates(plan, rid)[0]
    assert old_table[:kept] + appended == h.executor.tables[rid] == h.scheduler.blocks.layout(rid).device
    assert kept < len(old_table)  # the freed blocks went elsewhere first, so the table changed
    assert h.work(plan, other) is not None
