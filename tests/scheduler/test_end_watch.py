"""EndWatch: the cheap per-token test that lets the exact stop and trigger checks be skipped."""

from __future__ import annotations

import random

from scheduler_svc.end_watch import EndWatch
from scheduler_svc.interception import ToolTrigger, find_stop_string
from scheduler_svc.tool_calls import HermesToolCalls


def test_eos_and_a_token_id_triggers_last_id_are_watched_and_nothing_else_by_id() -> None:
    watch = EndWatch.of((), (ToolTrigger("t", stop_token_ids=(7, 8)),), eos_token_ids=(2,))
    assert watch.may_end(2, "") and watch.may_end(8, "")
    assert not watch.may_end(7, "") and not watch.may_end(3, "abc")


def test_a_stop_string_or_text_trigger_is_watched_by_its_last_character() -> None:
    watch = EndWatch.of(("</answer>",), (ToolTrigger("calc", stop_string="]]"),), ())
    assert watch.may_end(5, "x>") and watch.may_end(5, "]")
    assert not watch.may_end(5, "") and not watch.may_end(5, "answer")


def test_a_tool_call_detector_is_watched_by_its_closing_tag() -> None:
    assert EndWatch.of((), (HermesToolCalls(),), ()).may_end(5, "l>\n")
    assert not EndWatch.of((), (HermesToolCalls(),), ()).may_end(5, "</tool_call")


def test_nothing_watched_lets_every_token_pass() -> None:
    watch = EndWatch.of((), (), ())
    assert not any(watch.may_end(token_id, text) for token_id, text in ((0, ""), (1, ">"), (2, "\n")))


def test_every_stop_and_trigger_that_fires_was_watched() -> None:
    """Random text fed a piece at a time: wherever the exact checks fire, may_end said so."""
    rng = random.Random(7)
    alphabet = "ab<>/]"
    stops = ("b>", "</a")
    trigger = ToolTrigger("t", stop_string="]]b")
    watch = EndWatch.of(stops, (trigger,), ())
    num_fired = 0
    for _ in range(300):
        text = ""
        for _ in range(12):
            piece = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 3)))
            text += piece
            fired = find_stop_string(text, piece, stops) or trigger.match(text, [], piece) is not None
            num_fired += fired
            assert watch.may_end(0, piece) or not fired, (text, piece)
    assert num_fired > 50  # the check was exercised
