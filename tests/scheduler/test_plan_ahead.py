"""Planning the next iteration while the executor computes the current one (Scheduler.schedule_ahead):
decodes only, a token still out taken from the executor's last sample, results applied in order,
and a token dropped where its request no longer waits for it."""

from __future__ import annotations

import dataclasses

from infercept.v1 import generation_pb2 as gen
from svc_common.step_wire import Work, unpack_work
from tests.scheduler.harness import Harness, generate_request

PROMPT = [1, 2, 3]
TRIGGER = 60  # what request 1 samples at position 4 (counting_rule)


def test_a_decode_planned_ahead_computes_the_executors_last_sampled_token() -> None:
    h = Harness()
    rid = h.add(generate_request(PROMPT, max_tokens=6))
    prompt = h.schedule()
    prompt_result = h.executor.run(prompt)
    assert h.scheduler.schedule_ahead(h.now) is None  # the prompt's chunk is requeued by its result
    h.apply(prompt, prompt_result)
    decode = h.schedule()
    decode_result = h.executor.run(decode)
    ahead = h.scheduler.schedule_ahead(h.now)
    assert ahead is not None
    assert unpack_work(ahead.work) == [Work(rid, 4, [], sample=True, use_last_sampled=True)]
    h.apply(decode, decode_result)
    h.apply(ahead, h.executor.run(ahead))
    assert len(h.scheduler.requests[rid].token_ids) == len(PROMPT) + 3
    reference = Harness()
    reference.add(generate_request(PROMPT, max_tokens=6))
    reference.run()
    h.run()
    assert h.tokens(rid) == reference.tokens(rid)


def test_nothing_is_planned_ahead_while_a_request_waits_to_start() -> None:
    h = Harness()
    h.add(generate_request(PROMPT, max_tokens=6))
    h.step()
    decode = h.schedule()
    h.add(generate_request(PROMPT, max_tokens=6))  # its prompt is planned once the result is in
    assert h.scheduler.schedule_ahead(h.now) is None
    h.update(decode)


def test_nothing_is_planned_ahead_for_a_request_whose_token_surely_ends_it() -> None:
    h = Harness()
    h.add(generate_request(PROMPT, max_tokens=2))
    h.step()
    h.schedule()  # samples the second and last token
    assert h.scheduler.schedule_ahead(h.now) is None


def test_a_token_planned_ahead_is_dropped_for_a_request_that_paused_and_resumed_meanwhile() -> None:
    def request() -> gen.GenerateRequest:
        proto = generate_request(PROMPT, max_tokens=8)
        proto.tools.add(name="t", stop_token_ids=[TRIGGER])
        return proto

    reference = Harness("preserve")
    rid = reference.add(request())
    reference.run_until_paused(rid)
    reference.resume(rid, [7, 8])
    reference.run()

    h = Harness("preserve")
    rid = h.add(request())
    h.step()
    decode = h.schedule()  # samples the trigger
    decode_result = h.executor.run(decode)
    ahead = h.scheduler.schedule_ahead(h.now)
    assert ahead is not None and [w.request_id for w in unpack_work(ahead.work)] == [rid]
    assert any(event.HasField("intercepted") for _, event in h.apply(decode, decode_result))
    h.resume(rid, [7, 8])  # before the plan ahead's result: its token follows the trigger, not these
    h.apply(ahead, h.executor.run(ahead))
    assert h.scheduler.requests[rid].token_ids[-2:] == [7, 8]
    h.run()
    assert h.tokens(rid) == reference.tokens(rid)
    assert h.finished(rid).finish_reason == reference.finished(rid).finish_reason


def test_planning_ahead_can_be_turned_off() -> None:
    h = Harness()
    h.scheduler.config = dataclasses.replace(h.scheduler.config, plan_ahead=False)
    h.add(generate_request(PROMPT, max_tokens=6))
    h.step()
    h.schedule()
    assert h.scheduler.schedule_ahead(h.now) is None


def test_a_block_a_decode_planned_ahead_completes_is_named_when_its_token_comes() -> None:
    h = Harness("vllm-apc", plan_ahead=True)  # prefix caching on; blocks of 4 tokens
    a = h.add(generate_request(PROMPT, max_tokens=10))
    while h.scheduler.has_work() or h.ahead is not None:
        h.iterate()
    ahead = [w for plan in h.plans for w in unpack_work(plan.work) if w.use_last_sampled]
    # Positions 7 and 11 end a block; their tokens were still being sampled when they were planned.
    assert {7, 11} <= {w.start_position for w in ahead}
    context = PROMPT + h.tokens(a)
    b = h.add(generate_request(context[:13], max_tokens=2))
    work = h.work(h.step(), b)
    assert work is not None and work.start_position == 12  # its 3 full blocks were found cached
    h.run()
    reference = Harness()  # no cache, no planning ahead; the fake executor checks every KV read
    reference.add(generate_request(PROMPT, max_tokens=1))  # tokens depend on the request id: b's
    c = reference.add(generate_request(context[:13], max_tokens=2))
    reference.run()
    assert h.tokens(b) == reference.tokens(c)
