"""The core's domain events: a batched TokenDeltas splits per session in order, and the edge
renders each event as the public API's ServerEvent, field by field."""

from __future__ import annotations

from scheduler_svc.event_render import render
from scheduler_svc.events import (
    Accepted,
    Finished,
    Intercepted,
    Resumed,
    TokenDelta,
    TokenDeltas,
    Usage,
    session_events,
)
from scheduler_svc.policies import PauseAction
from scheduler_svc.request import FinishReason
from tests.scheduler.harness import Harness, generate_request


def test_token_deltas_split_into_one_delta_per_session_in_place() -> None:
    deltas = TokenDeltas([3, 1], [40, 41], ["a", ""])
    finished = Finished(1, FinishReason.LENGTH, Usage(1, 2, 3, 4, 5))
    assert list(session_events([Accepted(7, 2, 9), deltas, finished])) == [
        Accepted(7, 2, 9),
        TokenDelta(3, (40,), "a"),
        TokenDelta(1, (41,), ""),
        finished,
    ]


def test_a_session_gets_its_token_before_the_finish_it_caused() -> None:
    h = Harness()
    rid = h.add(generate_request(max_tokens=1))
    events = h.update(h.schedule())
    assert [(r, e.WhichOneof("event")) for r, e in events] == [(rid, "tokens"), (rid, "finished")]


def test_every_event_renders_with_its_fields() -> None:
    assert render(TokenDelta(1, (5, 6), "hi")).tokens.token_ids == [5, 6]
    assert render(TokenDelta(1, (5,), "hi")).tokens.text == "hi"
    accepted = render(Accepted(4, 12, 99)).accepted
    assert (accepted.request_id, accepted.num_prompt_tokens, accepted.seed) == ("4", 12, 99)
    call = render(Intercepted(1, "calc", "1+1", "{}", 30, 2, PauseAction.SWAP)).intercepted
    assert (call.tool, call.call_text, call.arguments, call.num_context_tokens, call.index) == (
        "calc",
        "1+1",
        "{}",
        30,
        2,
    )
    assert call.context_action == "swap"
    resumed = render(Resumed(1, 3, 2, 1, 8)).resumed
    assert (
        resumed.num_returned_tokens,
        resumed.num_device_blocks_kept,
        resumed.num_blocks_swapped_in,
        resumed.num_recomputed_tokens,
    ) == (3, 2, 1, 8)
    finished = render(Finished(1, FinishReason.PAUSE_TIMEOUT, Usage(1, 2, 3, 4, 5))).finished
    assert finished.finish_reason == "pause_timeout"
    usage = finished.usage
    assert (
        usage.prompt_tokens,
        usage.generated_tokens,
        usage.returned_tokens,
        usage.recomputed_tokens,
        usage.interceptions,
    ) == (1, 2, 3, 4, 5)
