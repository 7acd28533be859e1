"""Tool triggers (stop strings, token ids, opening markers) and stop-string search."""

from __future__ import annotations

from scheduler_svc.interception import ToolTrigger, find_stop_string


def feed(trigger: ToolTrigger, pieces: list[str]) -> list[str | None]:
    """What match() returns after each piece of text, fed one token's text at a time."""
    text, out = "", []
    for piece in pieces:
        text += piece
        out.append(trigger.match(text, [], piece))
    return out


def test_stop_string_split_over_tokens_fires_once_at_its_end() -> None:
    calc = ToolTrigger("calc", stop_string="</calc>")
    results = feed(calc, ["1", "+", "2", "</", "cal", "c>"])
    assert results == [None, None, None, None, None, "1+2"]


def test_stop_string_completed_by_a_token_that_carries_text_after_it() -> None:
    calc = ToolTrigger("calc", stop_string="</calc>", opening_marker="<calc>")
    results = feed(calc, ["say <calc>", "2*3</ca", "lc> and then"])
    assert results == [None, None, "2*3"]


def test_stop_string_entirely_before_the_new_text_does_not_fire_again() -> None:
    calc = ToolTrigger("calc", stop_string="</calc>")
    # The stop string ended before the last token's text: not a new call.
    assert calc.match("x</calc>yz", [], "z") is None
    assert calc.match("x</calc>yz", [], "") is None


def test_opening_marker_takes_the_text_after_the_last_marker() -> None:
    search = ToolTrigger("search", stop_string="]]", opening_marker="[[")
    assert search.match("I will look up [[old]] no, [[cats and dogs]]", [], "]]") == "cats and dogs"
    # Without the marker in the text the whole segment is the call.
    assert search.match("cats]]", [], "]]") == "cats"


def test_without_an_opening_marker_the_call_is_the_whole_segment() -> None:
    tool = ToolTrigger("t", stop_string="<END>")
    assert tool.match("ask the weather<END>", [], "<END>") == "ask the weather"


def test_token_id_trigger_matches_the_last_ids() -> None:
    tool = ToolTrigger("t", stop_token_ids=(7, 8), opening_marker="<")
    assert tool.match("", [8], "") is None  # shorter than the trigger
    assert tool.match("", [1, 7], "") is None
    assert tool.match("", [7, 8, 9], "") is None  # must end with it
    assert tool.match("a<b", [1, 7, 8], "") == "b"
    assert tool.match("abc", [7, 8], "") == "abc"


def test_find_stop_string_only_where_it_can_end() -> None:
    assert find_stop_string("hello world", "ld", ("world",))
    assert find_stop_string("hello world!", "d!", ("world",))
    assert not find_stop_string("hello world!", "!", ("world",))  # ended a token earlier
    assert not find_stop_string("hello world", "", ("world",))
    assert not find_stop_string("hello world", "ld", ("", "xyz"))
    assert find_stop_string("ab", "ab", ("zz", "ab"))
