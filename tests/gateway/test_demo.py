"""The gateway demo runs end to end on the tiny model with scripted calls and tells each turn."""

from __future__ import annotations

import pytest

from gateway import demo


def test_the_demo_answers_every_question_and_tells_what_became_of_each_paused_context(
    gateway_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert demo.main(["--gateway", gateway_url, "--scripted", "--max-tokens", "12"]) == 0
    out = capsys.readouterr().out
    assert out.count("call (scripted after 8 tokens)") == 5
    assert out.count("while the tool runs, the server kept it on the device") == 5
    assert "tool result: 408" in out and "tool result: The capital of Kenya is Nairobi." in out
    assert out.count("resumed the paused request, context reused") == 5
    assert out.count("\nA: ") == 5
