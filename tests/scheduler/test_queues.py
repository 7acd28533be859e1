"""The compute queues: waiting places (arrival, vLLM 0.2's front and back) and readiness."""

from __future__ import annotations

from collections import deque

from scheduler_svc.block_manager import BlockLayout
from scheduler_svc.detokenizer import IncrementalDecoder
from scheduler_svc.queues import ComputeQueues, WaitingPlace, is_ready
from scheduler_svc.request import Request, Sampling

SAMPLING = Sampling(max_tokens=8, temperature=0.0, top_p=1.0, top_k=0, seed=0, stop=(), ignore_eos=True)


def request(request_id: int, arrival_s: float, num_tokens: int = 4, num_computed: int = 0) -> Request:
    return Request(
        request_id=request_id,
        arrival_s=arrival_s,
        token_ids=[1] * num_tokens,
        num_prompt_tokens=num_tokens,
        sampling=SAMPLING,
        tools=(),
        script=deque(),
        decoder=IncrementalDecoder(None),
        num_computed=num_computed,
    )


def waiting_ids(queues: ComputeQueues) -> list[int]:
    return [r.request_id for r in queues.waiting()]


def test_arrival_order_whatever_the_order_of_placing() -> None:
    queues = ComputeQueues()
    for rid, arrival in ((3, 2.0), (1, 0.0), (2, 1.0)):
        queues.place(request(rid, arrival), BlockLayout())
    assert waiting_ids(queues) == [1, 2, 3]


def test_front_goes_ahead_of_everything_the_latest_first_and_back_behind_the_waiting() -> None:
    queues = ComputeQueues()
    new = [request(rid, arrival) for rid, arrival in ((1, 0.0), (2, 1.0))]
    for r in new:
        queues.place(r, BlockLayout())
    queues.place(request(5, 3.0), BlockLayout(), WaitingPlace.BACK, now_s=5.0)  # vLLM 0.2's append
    queues.place(request(3, 4.0), BlockLayout(), WaitingPlace.FRONT)  # insert(0)
    queues.place(request(4, 4.5), BlockLayout(), WaitingPlace.FRONT)  # insert(0) again: ahead of 3
    queues.place(request(6, 5.5), BlockLayout())  # a later arrival: behind the one appended at 5.0
    assert waiting_ids(queues) == [4, 3, 1, 2, 5, 6]
    # Placing a waiting request again by arrival keeps its place; a front or back place moves it.
    queues.place(new[1], BlockLayout())
    assert waiting_ids(queues) == [4, 3, 1, 2, 5, 6]
    queues.place(new[1], BlockLayout(), WaitingPlace.FRONT)
    assert waiting_ids(queues) == [2, 4, 3, 1, 5, 6]
    queues.remove(new[1])
    assert waiting_ids(queues) == [4, 3, 1, 5, 6] and len(queues) == 5 and 2 not in queues


def test_a_request_that_becomes_ready_leaves_the_waiting_queue_and_forgets_its_place() -> None:
    queues = ComputeQueues()
    r = request(1, 0.0, num_tokens=5)
    queues.place(r, BlockLayout(), WaitingPlace.FRONT)
    r.num_computed = 4  # its prompt computed: one token pending
    queues.place(r, BlockLayout(device=[0]))
    assert (queues.num_waiting, [x.request_id for x in queues.ready()]) == (0, [1])
    r.token_ids += [2, 2]  # returned tokens: it waits again, by its arrival
    queues.place(r, BlockLayout(device=[0]))
    queues.place(request(2, 0.5), BlockLayout())
    assert waiting_ids(queues) == [1, 2]


def test_with_resumed_contexts_ready_a_computed_context_decodes_whatever_it_has_pending() -> None:
    returned = request(1, 0.0, num_tokens=9, num_computed=6)  # 3 tokens pending
    swapped = request(2, 0.0, num_tokens=7, num_computed=6)  # its context on the host
    discarded = request(3, 0.0, num_tokens=9, num_computed=0)
    on_device, on_host = BlockLayout(device=[0, 1]), BlockLayout(host=[0, 1])
    assert not is_ready(returned, on_device) and not is_ready(swapped, on_host)
    assert is_ready(returned, on_device, includes_resumed=True)
    assert is_ready(swapped, on_host, includes_resumed=True)
    assert not is_ready(discarded, BlockLayout(), includes_resumed=True)
    newer = request(4, 1.0, num_tokens=7, num_computed=6)
    queues = ComputeQueues(ready_includes_resumed=True)
    for r, layout in (
        (returned, on_device),
        (swapped, on_host),
        (discarded, BlockLayout()),
        (newer, on_device),
    ):
        queues.place(r, layout)
    # The swapped one comes last, after newer requests on the device (vLLM 0.2's swapped queue).
    assert [r.request_id for r in queues.ready()] == [1, 4, 2] and waiting_ids(queues) == [3]
    on_host.device, on_host.host = on_host.host, []  # swapped back in
    assert [r.request_id for r in queues.ready()] == [1, 2, 4]
