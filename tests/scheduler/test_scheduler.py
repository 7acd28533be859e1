"""The scheduler core driven by fabricated executor results: batching, FCFS preemption, scripted
and written interceptions, resume errors, finish reasons, aborts, stats."""

from __future__ import annotations

import pytest

from executor_svc.byte_tokenizer import build_byte_tokenizer
from infercept.v1 import executor_pb2 as pb
from scheduler_svc.admission import RequestError
from scheduler_svc.config import SchedulerConfig
from scheduler_svc.events import Finished, session_events
from scheduler_svc.scheduler import Scheduler
from scheduler_svc.stats_render import stats_proto
from svc_common.step_wire import unpack_sampled, unpack_work
from tests.scheduler.harness import (
    EOS,
    Harness,
    TokenRule,
    counting_rule,
    executor_description,
    fake_step,
    generate_request,
    harness_cost_model,
)


def work_tokens(plan: pb.StepPlan) -> int:
    return sum(len(w.token_ids) for w in unpack_work(plan.work))


def text_rule(prompt_len: int, text: str) -> TokenRule:
    """Sample the bytes of `text`, one per position after the prompt; spaces beyond it."""
    data = text.encode()
    return lambda rid, position: (
        data[position - prompt_len] if position - prompt_len < len(data) else ord(" ")
    )


# ----- batching -----


def test_chunked_prefill_respects_the_token_budget_and_splits_a_long_prompt() -> None:
    h = Harness(max_batched_tokens=8)
    long_id = h.add(generate_request(range(1, 22), max_tokens=4))  # 21 prompt tokens
    others = [h.add(generate_request([5] * n, max_tokens=5)) for n in (3, 10, 1)]
    h.run()
    assert all(work_tokens(plan) <= 8 for plan in h.plans)
    assert any(work_tokens(plan) == 8 for plan in h.plans)
    chunks = [w for plan in h.plans if (w := h.work(plan, long_id)) and w.start_position < 21]
    assert [(c.start_position, len(c.token_ids), c.sample) for c in chunks] == [
        (0, 8, False),
        (8, 8, False),
        (16, 5, True),  # only the chunk that ends the prompt samples
    ]
    for rid in (long_id, *others):
        assert h.finished(rid).finish_reason == "length"
        prompt_len = h.finished(rid).usage.prompt_tokens
        assert h.tokens(rid) == [
            counting_rule(rid, p) for p in range(prompt_len, prompt_len + len(h.tokens(rid)))
        ]


def test_max_num_seqs_limits_the_requests_per_plan() -> None:
    h = Harness(max_num_seqs=2)
    rids = [h.add(generate_request(max_tokens=3)) for _ in range(5)]
    h.run()
    assert all(len(plan.work.request_ids) <= 2 for plan in h.plans)
    assert max(len(plan.work.request_ids) for plan in h.plans) == 2
    assert all(h.finished(rid).finish_reason == "length" for rid in rids)


def test_decode_tokens_go_before_older_prompt_chunks() -> None:
    h = Harness("improved-discard", max_batched_tokens=8)
    old = h.add(generate_request(range(1, 17), max_tokens=10, script=[(1, "t")]))  # 16 prompt tokens
    new = h.add(generate_request([9] * 4, max_tokens=20))
    h.run_until_paused(old)  # after two chunks of 8; the context is discarded
    h.step()  # new's prompt
    h.step()  # new decodes
    h.resume(old, [7, 7])  # old must recompute 19 tokens and keeps its older place
    plan = h.step()
    assert [(w.request_id, w.start_position, len(w.token_ids)) for w in unpack_work(plan.work)] == [
        (new, 5, 1),  # the decode token first, although `new` arrived later
        (old, 0, 7),  # then the older request's chunk, in the budget that is left
    ]


def test_has_work_is_false_when_every_request_is_paused() -> None:
    h = Harness("preserve")
    rid = h.add(generate_request(script=[(2, "t")]))
    assert h.scheduler.has_work()
    h.run_until_paused(rid)
    assert not h.scheduler.has_work()
    assert not h.schedule().work.request_ids
    h.resume(rid, [])
    assert h.scheduler.has_work()


# ----- FCFS and preemption -----


def test_fcfs_preempts_the_newest_holder_and_it_is_recomputed() -> None:
    h = Harness(num_device_blocks=6)  # 24 token slots; three requests want 16 each
    rids = [h.add(generate_request([3, 1, 4, 1], max_tokens=12)) for _ in range(3)]
    arrival = {rid: i for i, rid in enumerate(rids)}  # added in order; ties go by id
    dropped_ever: set[int] = set()
    for _ in range(200):
        if not h.scheduler.has_work():
            break
        requests = h.scheduler.requests
        holders = {rid for rid in requests if h.scheduler.blocks.layout(rid).device}
        computed = {rid: r.num_computed for rid, r in requests.items()}
        plan = h.schedule()
        worked = {w.request_id: w for w in unpack_work(plan.work)}
        dropped = {
            rid
            for rid in holders
            if computed[rid]
            and (
                worked[rid].start_position < computed[rid]
                if rid in worked
                else requests[rid].num_computed == 0
            )
        }
        for victim in dropped:
            # Someone older needed the memory ...
            assert any(arrival[rid] < arrival[victim] for rid in worked), "preempted for a newer request"
            # ... and every newer holder was either computing in this plan or dropped as well.
            newer = {rid for rid in holders if arrival[rid] > arrival[victim]}
            assert newer <= set(worked) | dropped, f"{victim} preempted while newer {newer} kept blocks"
        dropped_ever |= dropped
        h.update(plan)
    assert not h.scheduler.requests
    assert h.scheduler.stats.preemptions > 0 and dropped_ever
    assert rids[0] not in dropped_ever  # the oldest is never preempted
    assert rids[-1] in dropped_ever
    for rid in rids:
        usage = h.finished(rid).usage
        assert (usage.recomputed_tokens > 0) == (rid in dropped_ever)
        assert h.tokens(rid) == [counting_rule(rid, p) for p in range(4, 16)]


def test_memory_shortage_preempts_the_newest_holder() -> None:
    h = Harness(num_device_blocks=6)
    a = h.add(generate_request([1] * 8, max_tokens=4))  # 2 full blocks: its next token needs a third
    b = h.add(generate_request([2] * 6, max_tokens=4))  # 2 blocks with room for 2 more positions
    c = h.add(generate_request([3] * 6, max_tokens=4))
    h.step()
    assert stats_proto(h.scheduler).device_blocks_free == 0
    plan = h.step()
    starts = {w.request_id: w.start_position for w in unpack_work(plan.work)}
    # `a` takes a block from `c`, the newest, not from `b`; `c` starts over in what is left.
    assert starts == {a: 8, b: 6, c: 0}
    h.run()
    recomputed = {rid: h.finished(rid).usage.recomputed_tokens for rid in (a, b, c)}
    assert recomputed[a] == recomputed[b] == 0 and recomputed[c] > 0


def test_a_newer_request_waits_instead_of_preempting_an_older_paused_one() -> None:
    h = Harness("preserve", num_device_blocks=4)
    old = h.add(generate_request([1] * 8, max_tokens=3, script=[(1, "t")]))
    h.run_until_paused(old)  # keeps its 2 blocks through the call
    new = h.add(generate_request([2] * 12, max_tokens=3))  # needs 3 blocks, 2 are free
    first = h.step()
    assert [(w.request_id, w.start_position, len(w.token_ids)) for w in unpack_work(first.work)] == [
        (new, 0, 8)
    ]
    assert not h.step().work.request_ids  # `new` waits for memory
    h.resume(old, [5])
    h.run()
    resumed = next(e.resumed for e in h.events[old] if e.HasField("resumed"))
    assert resumed.num_device_blocks_kept == 2
    assert h.finished(old).usage.recomputed_tokens == 0
    assert h.finished(new).finish_reason == "length"


def test_an_older_request_keeps_its_blocks_when_memory_runs_out() -> None:
    h = Harness(num_device_blocks=4, max_batched_tokens=32)
    old = h.add(generate_request([1] * 12, max_tokens=4))  # 15 positions computed = 4 blocks
    new = h.add(generate_request([2] * 4, max_tokens=4))
    h.run()
    # `old` runs to the end undisturbed; `new` is preempted for it and recomputed afterwards.
    assert h.finished(old).usage.recomputed_tokens == 0
    assert h.finished(new).usage.recomputed_tokens > 0
    assert h.finished(new).finish_reason == "length"
    assert stats_proto(h.scheduler).device_blocks_free == 4


def test_a_request_larger_than_the_device_pool_does_not_stall() -> None:
    # max_model_len (128) allows contexts the 2-block device pool (8 tokens) cannot hold.
    h = Harness(num_device_blocks=2)
    rid = h.add(generate_request([1, 2, 3, 4], max_tokens=20))
    for _ in range(40):
        h.step()
    # The served maximum length is capped by the pool: the request finishes there.
    assert rid not in h.scheduler.requests
    assert h.scheduler.executor.max_model_len == 8


# ----- interceptions -----


def test_scripted_interceptions_fire_after_exactly_after_tokens_since_the_last_resume() -> None:
    h = Harness("preserve")
    rid = h.add(generate_request([1] * 5, max_tokens=10, script=[(3, "search"), (2, "calc")]))
    first = h.run_until_paused(rid)
    assert len(h.tokens(rid)) == 3
    assert (first.tool, first.index, first.num_context_tokens) == ("search", 0, 8)
    h.resume(rid, [50, 51, 52])
    second = h.run_until_paused(rid)
    assert len(h.tokens(rid)) == 5  # two more generated tokens, not counting the returned ones
    assert (second.tool, second.index, second.num_context_tokens) == ("calc", 1, 13)
    h.resume(rid, [])
    h.run()
    finished = h.finished(rid)
    assert finished.finish_reason == "length" and len(h.tokens(rid)) == 10
    assert (finished.usage.interceptions, finished.usage.returned_tokens) == (2, 3)
    stats = stats_proto(h.scheduler)
    assert dict(stats.interceptions_by_tool) == {"search": 1, "calc": 1}
    # Returned tokens sit in the context at their place: the positions after them shift by three.
    assert h.tokens(rid)[3:] == [counting_rule(rid, p) for p in range(11, 18)]


def test_a_tool_stop_string_written_by_the_model_intercepts_with_the_call_text() -> None:
    text = "I'll compute <calc>1+2</calc>" + "_" + " then <calc>4*5</calc> done"
    first_len = len("I'll compute <calc>1+2</calc>")
    h = Harness("vllm", rule=text_rule(3, text), tokenizer=build_byte_tokenizer())
    proto = generate_request([1, 2, 3], max_tokens=60)
    proto.tools.add(name="calc", stop_string="</calc>", opening_marker="<calc>", expected_duration_s=2.0)
    rid = h.add(proto)
    call = h.run_until_paused(rid)
    assert (call.tool, call.call_text, call.num_context_tokens) == ("calc", "1+2", 3 + first_len)
    assert h.text(rid) == text[:first_len]
    pending = h.scheduler.requests[rid].pending_call
    assert pending is not None and pending.expected_duration_s == 2.0
    h.resume(rid, [ord("3")])  # takes the place of "_" in `text`
    call = h.run_until_paused(rid)
    assert (call.call_text, call.index) == ("4*5", 1)  # only the text since the resume counts
    h.resume(rid, [ord("2"), ord("0")])
    h.run()
    assert h.finished(rid).usage.interceptions == 2


def test_without_an_opening_marker_the_call_is_the_text_since_the_resume() -> None:
    h = Harness("preserve", rule=text_rule(2, "why?_how now?"), tokenizer=build_byte_tokenizer())
    proto = generate_request([1, 2], max_tokens=30)
    proto.tools.add(name="ask", stop_string="?")
    rid = h.add(proto)
    assert h.run_until_paused(rid).call_text == "why"
    h.resume(rid, [ord("!")])  # in place of "_"
    assert h.run_until_paused(rid).call_text == "how now"


def test_a_tool_token_id_trigger_intercepts() -> None:
    trigger = (250, 251)
    h = Harness("preserve", rule=lambda rid, pos: {9: 250, 10: 251}.get(pos, 1 + pos % 50))
    proto = generate_request([1] * 4, max_tokens=20)
    proto.tools.add(name="db", stop_token_ids=trigger)
    rid = h.add(proto)
    call = h.run_until_paused(rid)
    assert call.tool == "db" and call.num_context_tokens == 11
    assert h.tokens(rid)[-2:] == list(trigger)


def test_a_token_id_trigger_only_counts_tokens_generated_since_the_resume() -> None:
    # The prompt ends with the trigger's first id and the first generated token is its second:
    # not a call, since the model did not write the first one. Later the model writes both.
    h = Harness("preserve", rule=lambda rid, pos: {4: 251, 12: 250, 13: 251}.get(pos, 7))
    proto = generate_request([1, 2, 3, 250], max_tokens=30)
    proto.tools.add(name="db", stop_token_ids=[250, 251])
    rid = h.add(proto)
    assert h.run_until_paused(rid).num_context_tokens == 14
    h.resume(rid, [250])  # the result ends with the first id; the next token (14) is not the second
    h.run()
    assert h.finished(rid).usage.interceptions == 1


def test_tool_started_updates_the_expected_duration() -> None:
    h = Harness("preserve")
    rid = h.add(generate_request(script=[(1, "t")]))
    with pytest.raises(RequestError) as caught:
        h.scheduler.tool_started(rid, 3.0)
    assert caught.value.code == "FAILED_PRECONDITION"
    h.run_until_paused(rid)
    h.scheduler.tool_started(rid, 4.5)
    pending = h.scheduler.requests[rid].pending_call
    assert pending is not None and pending.expected_duration_s == 4.5


# ----- resume errors -----


def test_resume_errors() -> None:
    h = Harness("preserve", max_model_len=16)
    rid = h.add(generate_request([1] * 6, max_tokens=8, script=[(2, "t")]))
    h.step()
    with pytest.raises(RequestError) as caught:
        h.resume(rid, [1])  # nothing pending yet
    assert caught.value.code == "FAILED_PRECONDITION"
    with pytest.raises(RequestError) as caught:
        h.resume(999, [1])
    assert caught.value.code == "NOT_FOUND"
    h.run_until_paused(rid)  # 8 tokens in the context
    with pytest.raises(RequestError) as caught:
        h.resume(rid, [1] * 8)  # 16 = max_model_len: no room for one more token
    assert caught.value.code == "OUT_OF_RANGE"
    with pytest.raises(RequestError) as caught:
        h.resume(rid, [300])
    assert caught.value.code == "INVALID_ARGUMENT"
    # The refusals changed nothing: the longest result that fits is still accepted.
    assert len(h.scheduler.requests[rid].token_ids) == 8
    h.resume(rid, [1] * 7)
    h.run()
    finished = h.finished(rid)
    assert finished.finish_reason == "max_model_len" and finished.usage.returned_tokens == 7
    with pytest.raises(RequestError) as caught:
        h.resume(rid, [])  # finished
    assert caught.value.code == "NOT_FOUND"


# ----- finish reasons -----


def test_finish_length() -> None:
    h = Harness()
    rid = h.add(generate_request(max_tokens=3))
    h.run()
    finished = h.finished(rid)
    assert finished.finish_reason == "length" and finished.usage.generated_tokens == 3
    assert len(h.tokens(rid)) == 3


def eos_at(position: int) -> TokenRule:
    return lambda rid, pos: EOS if pos == position else counting_rule(rid, pos)


def test_finish_eos_and_ignore_eos() -> None:
    h = Harness(rule=eos_at(7))
    stops = h.add(generate_request([1] * 5, max_tokens=10))
    ignores = h.add(generate_request([1] * 5, max_tokens=10, ignore_eos=True))
    h.run()
    assert h.finished(stops).finish_reason == "eos"
    assert h.tokens(stops)[-1] == EOS and len(h.tokens(stops)) == 3
    assert h.finished(ignores).finish_reason == "length"
    assert len(h.tokens(ignores)) == 10 and h.tokens(ignores)[2] == EOS


def test_finish_on_a_stop_string_split_over_multibyte_tokens() -> None:
    text = "héllo wörld and more"
    h = Harness(rule=text_rule(2, text), tokenizer=build_byte_tokenizer())
    rid = h.add(generate_request([1, 2], max_tokens=50, stop=["o w"]))
    h.run()
    assert h.finished(rid).finish_reason == "stop"
    assert h.text(rid) == "héllo w"
    assert h.finished(rid).usage.generated_tokens == len("héllo w".encode())


def test_finish_at_max_model_len() -> None:
    h = Harness(max_model_len=12)
    rid = h.add(generate_request([1] * 8, max_tokens=100))
    h.run()
    finished = h.finished(rid)
    assert finished.finish_reason == "max_model_len" and finished.usage.generated_tokens == 4
    # The last token is never computed: no plan reaches past position max_model_len - 1.
    assert max(w.start_position + len(w.token_ids) for p in h.plans for w in unpack_work(p.work)) == 11


# ----- aborts and cleanup -----


def test_abort_before_the_executor_knew_the_request_forgets_nothing() -> None:
    h = Harness()
    rid = h.add(generate_request())
    events = h.scheduler.abort(rid)
    assert [(e.request_id, e.reason) for e in events if isinstance(e, Finished)] == [(rid, "abort")]
    plan = h.schedule()
    assert not plan.forget_request_ids and not plan.work.request_ids and not plan.new_requests
    assert stats_proto(h.scheduler).aborted_requests == 1


def test_abort_frees_everything_and_the_next_plan_forgets_the_request() -> None:
    h = Harness("preserve", num_device_blocks=16)
    rid = h.add(generate_request([1] * 9, max_tokens=10, script=[(2, "t")]))
    other = h.add(generate_request(max_tokens=30))
    h.run_until_paused(rid)
    assert stats_proto(h.scheduler).device_blocks_free < 16
    events = h.scheduler.abort(rid)
    assert [(e.request_id, e.reason) for e in events if isinstance(e, Finished)] == [(rid, "abort")]
    plan = h.step()
    assert list(plan.forget_request_ids) == [rid]
    assert h.work(plan, rid) is None
    assert not h.step().forget_request_ids  # only once
    h.run()
    assert h.finished(other).finish_reason == "length"
    stats = stats_proto(h.scheduler)
    assert stats.device_blocks_free == 16 and stats.aborted_requests == 1
    with pytest.raises(RequestError) as caught:
        h.scheduler.abort(rid)
    assert caught.value.code == "NOT_FOUND"


def test_update_ignores_tokens_of_a_request_aborted_after_schedule() -> None:
    h = Harness()
    doomed = h.add(generate_request(max_tokens=5))
    kept = h.add(generate_request(max_tokens=5))
    plan = h.schedule()
    result = fake_step(plan)
    assert {s.request_id for s in unpack_sampled(result.sampled)} == {doomed, kept}
    h.scheduler.abort(doomed)
    events = h.scheduler.update(plan, result, h.now)
    assert [event.request_id for event in session_events(events)] == [kept]
    assert doomed not in h.scheduler.requests
    assert list(h.schedule().forget_request_ids) == [doomed]


def test_update_rejects_a_result_for_another_plan() -> None:
    h = Harness()
    h.add(generate_request())
    plan = h.schedule()
    with pytest.raises(AssertionError):
        h.scheduler.update(plan, pb.StepResult(step_id=plan.step_id + 1), h.now)


def test_server_full_is_resource_exhausted() -> None:
    config = SchedulerConfig(max_live_requests=2, check_invariants=True)
    scheduler = Scheduler(config, executor_description(), None, harness_cost_model())
    scheduler.add(generate_request(), 0.0)
    scheduler.add(generate_request(), 0.0)
    with pytest.raises(RequestError) as caught:
        scheduler.add(generate_request(), 0.0)
    assert caught.value.code == "RESOURCE_EXHAUSTED"


def test_reset_executor_state_recomputes_everything_consistently() -> None:
    h = Harness("swap", num_device_blocks=12)
    a = h.add(generate_request([1] * 7, max_tokens=10, script=[(2, "t")]))
    b = h.add(generate_request([2] * 5, max_tokens=10))
    h.run_until_paused(a)
    h.step()
    h.scheduler.reset_executor_state()
    stats = stats_proto(h.scheduler)
    assert stats.device_blocks_free == 12 and stats.host_blocks_free == stats.host_blocks_total
    truth = h.executor.truth
    h.executor = type(h.executor)(h.desc, h.executor.rule)  # a restarted executor knows nothing
    h.executor.truth = truth
    plan = h.step()
    assert {n.request_id for n in plan.new_requests} == {b} and not plan.forget_request_ids
    work = h.work(plan, b)
    assert work is not None and work.start_position == 0
    h.resume(a, [3])
    h.run()
    assert h.finished(a).usage.recomputed_tokens > 0 and h.finished(b).usage.recomputed_tokens > 0


# ----- stats -----


def test_token_kinds_add_up_to_the_tokens_the_plans_computed() -> None:
    h = Harness("vllm", num_device_blocks=10, max_batched_tokens=12)
    prompts = [[1] * 9, [2] * 5, [3] * 13, [4] * 3]
    rids = [
        h.add(generate_request(p, max_tokens=12, script=[(3, "t"), (4, "u")] if i % 2 == 0 else []))
        for i, p in enumerate(prompts)
    ]
    returned = 0
    for _ in range(300):
        if not h.scheduler.requests:
            break
        for rid, event in h.update(h.schedule()):
            if event.HasField("intercepted"):
                h.resume(rid, [5] * (rid + 1))
                returned += rid + 1
    assert not h.scheduler.requests
    stats = stats_proto(h.scheduler)
    computed = sum(work_tokens(plan) for plan in h.plans)
    assert (
        stats.prompt_tokens + stats.decode_tokens + stats.returned_tokens + stats.recomputed_tokens
        == computed
    )
    assert stats.prompt_tokens == sum(map(len, prompts))
    assert stats.returned_tokens == returned
    assert stats.recomputed_tokens == sum(h.finished(rid).usage.recomputed_tokens for rid in rids) > 0
    # Every generated token is computed once, except each request's last one.
    assert stats.decode_tokens == sum(h.finished(rid).usage.generated_tokens for rid in rids) - len(rids)
    assert stats.iterations == len(h.plans)
    assert stats.device_blocks_free == 10 and stats.requests_by_state["finished"] == 4


def test_recomputation_chunks_after_the_prompt_count_as_recompute() -> None:
    # A tight budget makes the preempted request recompute in chunks that start past its prompt.
    h = Harness(num_device_blocks=8, max_batched_tokens=4)
    a = h.add(generate_request([1] * 4, max_tokens=20))
    b = h.add(generate_request([2] * 2, max_tokens=20))
    h.run()
    assert h.scheduler.stats.preemptions > 0
    recomputed = h.finished(b).usage.recomputed_tokens
    assert recomputed > 4 and h.finished(a).usage.recomputed_tokens == 0
    starts = [w.start_position for p in h.plans if (w := h.work(p, b)) is not None]
    assert any(0 < s < recomputed for s in starts[starts.index(0, 1) :])  # a later recompute chunk
    stats = stats_proto(h.scheduler)
    assert stats.recomputed_tokens == recomputed
    assert (stats.prompt_tokens, stats.decode_tokens) == (6, 2 * (20 - 1))


def test_requests_by_state() -> None:
    h = Harness("preserve", max_batched_tokens=4)
    paused = h.add(generate_request([1, 2], max_tokens=5, script=[(1, "t")]))
    running = h.add(generate_request([1, 2], max_tokens=5))
    waiting = h.add(generate_request([1] * 10, max_tokens=5))
    h.step()  # both short prompts; the budget leaves nothing for `waiting`
    states = stats_proto(h.scheduler).requests_by_state
    assert dict(states) == {"waiting": 1, "running": 1, "paused": 1, "finished": 0}
    assert h.scheduler.requests[paused].status.value == "paused"
    assert h.scheduler.requests[running].num_pending == 1
    assert h.scheduler.requests[waiting].num_computed == 0
