"""Duration estimators: oracle and elapsed by hand, history on known durations, and the registry."""

from __future__ import annotations

import math

import pytest

from scheduler_svc.estimators import (
    ESTIMATORS,
    ElapsedEstimator,
    HistoryEstimator,
    OracleEstimator,
    create_estimator,
)


def history_of(durations: list[float], tool: str = "search", **settings: int) -> HistoryEstimator:
    estimator = HistoryEstimator(**settings)
    for duration_s in durations:
        estimator.observe(tool, duration_s)
    return estimator


ONE_TO_TEN = [float(d) for d in range(1, 11)]


# ----- oracle and elapsed -----


@pytest.mark.parametrize(
    ("elapsed_s", "hint_s", "expected_s"),
    [
        (0.0, 5.0, 5.0),
        (2.0, 5.0, 3.0),
        (5.0, 5.0, 0.0),
        (7.5, 5.0, 0.0),  # the call overran its hint: expected back now
        (2.0, 0.0, 2.0),  # no hint: as elapsed
        (-1.0, 5.0, 5.0),  # a clock skew never makes time negative
    ],
)
def test_oracle_is_hint_minus_elapsed(elapsed_s: float, hint_s: float, expected_s: float) -> None:
    assert OracleEstimator().remaining_s("search", elapsed_s, hint_s) == expected_s


@pytest.mark.parametrize(
    ("elapsed_s", "hint_s", "expected_s"),
    [(0.0, 5.0, 0.0), (2.5, 5.0, 2.5), (9.0, 0.0, 9.0), (-1.0, 0.0, 0.0)],
)
def test_elapsed_ignores_the_hint(elapsed_s: float, hint_s: float, expected_s: float) -> None:
    assert ElapsedEstimator().remaining_s("search", elapsed_s, hint_s) == expected_s


def test_oracle_and_elapsed_learn_nothing() -> None:
    oracle, elapsed = OracleEstimator(), ElapsedEstimator()
    for _ in range(20):
        oracle.observe("search", 100.0)
        elapsed.observe("search", 100.0)
    assert oracle.remaining_s("search", 1.0, 0.0) == 1.0
    assert elapsed.remaining_s("search", 1.0, 0.0) == 1.0


# ----- history -----


@pytest.mark.parametrize(
    ("elapsed_s", "expected_s"),
    [
        (0.0, 5.5),  # mean(1..10)
        (4.5, 3.0),  # mean(0.5, 1.5, ..., 5.5)
        (5.0, 3.0),  # d = 5 has ended: mean(1..5)
        (9.0, 1.0),  # only 10 left
        (9.75, 0.25),
    ],
)
def test_history_is_mean_excess_over_longer_durations(elapsed_s: float, expected_s: float) -> None:
    estimator = history_of(ONE_TO_TEN)
    assert estimator.remaining_s("search", elapsed_s, 0.0) == pytest.approx(expected_s, rel=1e-12)


def test_history_ignores_the_hint_once_it_has_samples() -> None:
    assert history_of(ONE_TO_TEN).remaining_s("search", 4.5, 100.0) == pytest.approx(3.0, rel=1e-12)


@pytest.mark.parametrize("elapsed_s", [10.0, 12.0, 1000.0])
def test_history_outlived_falls_back_to_elapsed(elapsed_s: float) -> None:
    assert history_of(ONE_TO_TEN).remaining_s("search", elapsed_s, 3.0) == elapsed_s


def test_history_with_few_samples_uses_the_hint_then_elapsed() -> None:
    estimator = history_of(ONE_TO_TEN[:7])  # min_samples is 8
    assert estimator.remaining_s("search", 2.0, 30.0) == 28.0
    assert estimator.remaining_s("search", 2.0, 0.0) == 2.0
    estimator.observe("search", 8.0)
    assert estimator.remaining_s("search", 2.0, 30.0) == pytest.approx(3.5, rel=1e-12)  # mean(1..6)


def test_history_window_drops_the_oldest_samples() -> None:
    estimator = history_of([100.0] * 4, window=4, min_samples=2)
    assert estimator.remaining_s("search", 0.0, 0.0) == 100.0
    estimator.observe("search", 1.0)
    estimator.observe("search", 2.0)
    assert estimator.remaining_s("search", 0.0, 0.0) == pytest.approx(50.75, rel=1e-12)  # 100, 100, 1, 2
    estimator.observe("search", 3.0)
    estimator.observe("search", 4.0)
    assert estimator.remaining_s("search", 0.0, 0.0) == pytest.approx(2.5, rel=1e-12)  # 1..4
    assert estimator.remaining_s("search", 5.0, 0.0) == 5.0  # every 100 has left the window


def test_history_window_with_repeated_durations() -> None:
    estimator = history_of([3.0, 3.0, 1.0, 3.0], window=3, min_samples=1)  # keeps 3, 1, 3
    assert estimator.remaining_s("search", 0.0, 0.0) == pytest.approx(7.0 / 3.0, rel=1e-12)
    assert estimator.remaining_s("search", 2.0, 0.0) == 1.0


def test_history_learns_each_tool_apart() -> None:
    estimator = history_of(ONE_TO_TEN, tool="search")
    for _ in range(10):
        estimator.observe("calculator", 0.5)
    assert estimator.remaining_s("search", 0.0, 0.0) == pytest.approx(5.5, rel=1e-12)
    assert estimator.remaining_s("calculator", 0.25, 0.0) == 0.25
    assert estimator.remaining_s("chat", 2.0, 9.0) == 7.0  # never seen: the hint


def test_history_ignores_impossible_durations() -> None:
    estimator = history_of(ONE_TO_TEN[:7])
    for bad_s in (-1.0, math.nan, math.inf):
        estimator.observe("search", bad_s)
    assert estimator.remaining_s("search", 2.0, 30.0) == 28.0  # still 7 samples: the hint
    assert history_of([*ONE_TO_TEN, -5.0, math.nan]).remaining_s("search", 4.5, 0.0) == pytest.approx(
        3.0, rel=1e-12
    )


def test_history_counts_zero_length_calls() -> None:
    assert history_of([0.0] * 8 + [8.0] * 8).remaining_s("search", 0.0, 0.0) == 8.0
    assert history_of([0.0] * 8 + [8.0] * 8).remaining_s("search", -1.0, 0.0) == 8.0  # elapsed clamps to 0


def test_history_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="window"):
        HistoryEstimator(window=0)
    with pytest.raises(ValueError, match="min_samples"):
        HistoryEstimator(min_samples=0)
    assert HistoryEstimator(window=4, min_samples=8).min_samples == 4


# ----- registry -----


def test_registry_holds_every_estimator_by_name() -> None:
    assert sorted(ESTIMATORS) == ["elapsed", "history", "oracle"]
    for name in ESTIMATORS:
        assert create_estimator(name).name == name
    assert isinstance(create_estimator("history"), HistoryEstimator)


def test_unknown_estimator_names_the_choices() -> None:
    with pytest.raises(ValueError, match=r"'guess'.*\['elapsed', 'history', 'oracle'\]"):
        create_estimator("guess")


def test_history_quantile_is_the_nearest_rank_of_a_tools_recorded_durations() -> None:
    estimator = HistoryEstimator(window=10, min_samples=4)
    for duration_s in (4.0, 1.0, 3.0):
        estimator.observe("calc", duration_s)
    assert estimator.quantile_s("calc", 0.9) is None  # fewer than min_samples
    estimator.observe("calc", 2.0)
    assert estimator.quantile_s("calc", 0.5) == 2.0 and estimator.quantile_s("calc", 0.9) == 4.0
    assert estimator.quantile_s("calc", 0.01) == 1.0 and estimator.quantile_s("search", 0.5) is None


def test_the_history_forgets_the_least_recently_used_tool_past_its_cap() -> None:
    history = HistoryEstimator(window=4, min_samples=1, max_tools=2)
    history.observe("a", 10.0)
    history.observe("b", 20.0)
    assert history.remaining_s("a", 0.0, 0.0) == 10.0  # a is used: b is the least recent now
    history.observe("c", 30.0)
    assert history.num_tools == 2
    assert history.remaining_s("a", 0.0, 0.0) == 10.0 and history.remaining_s("c", 0.0, 0.0) == 30.0
    assert history.remaining_s("b", 0.0, 5.0) == 5.0  # forgotten: back to the hint


def test_unique_tool_names_cannot_grow_the_history_without_bound() -> None:
    history = HistoryEstimator(max_tools=8)
    for i in range(1000):
        history.observe(f"tool-{i}", 1.0)
    assert history.num_tools == 8
