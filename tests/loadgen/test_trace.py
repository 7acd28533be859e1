"""Traces in the paper's format become plans with Poisson arrivals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scheduler_svc.sim.request_plan import Segment
from tooling.loadgen.workloads import load_trace

TRACE = {
    "req-a": [
        {"prompt_tokens": 100, "completion_tokens": 20, "api_time": 0.5, "api_token_length": 7},
        # Later prompt_tokens are the context so far in the paper's harness (100 + 20 + 7); ignored.
        {"prompt_tokens": 127, "completion_tokens": 0, "api_time": 1.5, "api_token_length": 3},
        {"prompt_tokens": 130, "completion_tokens": 30, "api_time": 0.0, "api_token_length": 0},
    ],
    "req-b": [{"prompt_tokens": 50, "completion_tokens": 10}],
}


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(data))
    return path


def test_a_trace_is_read_segment_by_segment(tmp_path: Path) -> None:
    plans = load_trace(write(tmp_path, TRACE), rate=2.0, seed=0)
    assert [p.index for p in plans] == [0, 1] and [p.workload for p in plans] == ["trace", "trace"]
    a, b = plans
    assert a.prompt_tokens == 100
    # A segment with no completion tokens generates one: the server intercepts after a token.
    assert a.segments == (Segment(20, "trace", 0.5, 7), Segment(1, "trace", 1.5, 3), Segment(30))
    assert (b.prompt_tokens, b.segments) == (50, (Segment(10),))
    assert 0 < a.arrival_s < b.arrival_s
    assert plans == load_trace(write(tmp_path, TRACE), rate=2.0, seed=0)
    assert [p.arrival_s for p in plans] != [p.arrival_s for p in load_trace(write(tmp_path, TRACE), 2.0, 1)]


def test_a_trace_is_cycled_over_a_duration_and_clipped(tmp_path: Path) -> None:
    plans = load_trace(
        write(tmp_path, TRACE), rate=20.0, seed=3, duration_s=10.0, max_model_len=64, tool="api"
    )
    assert 150 < len(plans) < 250 and plans[-1].arrival_s < 10.0
    assert [p.prompt_tokens for p in plans[:4]] == [p.prompt_tokens for p in plans[2:6]]
    long = plans[0]
    assert long.context_tokens == 64 and long.num_calls == 2
    assert [s.tool for s in long.segments] == ["api", "api", None]
    assert plans[1].context_tokens == 60  # fits already: unchanged


@pytest.mark.parametrize(
    "data",
    [
        {},
        [],
        {"r": []},
        {"r": [{"prompt_tokens": 0, "completion_tokens": 3}]},
        {"r": [{"prompt_tokens": 5, "completion_tokens": -1}]},
        {"r": [{"prompt_tokens": 5, "completion_tokens": 2}, {"completion_tokens": 3}]},  # no api_time
        {"r": [{"prompt_tokens": 5, "completion_tokens": "2"}]},
    ],
)
def test_bad_traces_are_refused(tmp_path: Path, data: object) -> None:
    with pytest.raises(ValueError):
        load_trace(write(tmp_path, data), rate=1.0, seed=0)


def test_a_rate_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        load_trace(write(tmp_path, TRACE), rate=0.0, seed=0)
