"""The paper figure's reading of a sweep: interpolated max rates, labels, colours, checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler_svc.policies import POLICIES
from tooling.paper_figure import (
    POLICY_COLOURS,
    SPARE_COLOUR,
    colour,
    default_policies,
    display_label,
    plot_figure,
    summarize_figure,
)
from tooling.run_record import Distribution, RunRecord, ServerDelta, Summary


def record(policy: str, rate: float, latency_s: float, recompute: float = 0.5) -> RunRecord:
    summary = Summary(10, 10, 1.0, 0, Distribution(mean=latency_s), Distribution(), 1.0)
    server = ServerDelta(100, 70, 0.7, recompute, 0, 0, 0.0)
    return RunRecord("sim", policy, "trace", rate, 60.0, 0, summary, server, {})


def test_the_default_policies_are_the_paper_baselines_on_vllm_0_2_then_what_is_registered() -> None:
    policies = default_policies()
    assert policies[:6] == (
        "vllm/prefill-first",
        "improved-discard/prefill-first",
        "preserve/prefill-first",
        "swap/prefill-first",
        "infercept-authors/estimator=oracle",  # the authors' selection, knowing each call's duration
        "infercept",  # ours, beside it
    )
    assert policies[-1] == "ideal"
    assert ("vllm-apc" in policies) == ("vllm-apc" in POLICIES)
    assert display_label("vllm/prefill-first") == "vllm (0.2)"


def test_every_policy_has_its_own_fixed_colour() -> None:
    names = ["vllm", "improved-discard", "swap", "preserve", "infercept", "vllm-apc", "continuum", "ideal"]
    assert sorted(POLICY_COLOURS) == sorted([*names, "lazy-swap", "infercept-authors"])
    assert len({*POLICY_COLOURS.values(), SPARE_COLOUR}) == 11
    assert colour("vllm/prefill-first") == colour("vllm") and colour("future-policy") == SPARE_COLOUR


def test_the_summary_compares_with_the_paper_and_with_ideal(tmp_path: Path) -> None:
    records = [
        record("vllm/prefill-first", 1.0, 0.02, recompute=0.2),
        record("vllm/prefill-first", 2.0, 0.38, recompute=0.38),
        record("ideal", 1.0, 0.01, recompute=0.0),
        record("ideal", 2.0, 0.01, recompute=0.0),
    ]
    summary = summarize_figure(records)
    vllm = summary["policies"]["vllm/prefill-first"]
    assert vllm["max_rate"] == pytest.approx(1.0 + 0.18 / 0.36)
    assert vllm["fraction_of_ideal"] == pytest.approx(1.5 / 2.0)
    assert vllm["ratio_to_paper"] == pytest.approx(1.5 / 1.57)
    assert vllm["latency_at_1_ms"] == pytest.approx(20.0)
    assert summary["checks"]["max_rate_within_15pct"] == {"vllm": True}
    assert summary["checks"]["latency_at_1_within_25pct"] == {"vllm": True}
    assert summary["vllm_recompute"]["by_rate"]["2"]["of_forward_time"] == 0.38
    plot_figure(records, tmp_path / "figure.png")
    assert (tmp_path / "figure.png").stat().st_size > 0


def test_the_authors_infercept_stands_for_the_papers_in_the_checks_and_ours_runs_beside_it() -> None:
    records = [
        record("infercept-authors/estimator=oracle", 1.0, 0.02, recompute=0.1),
        record("infercept-authors/estimator=oracle", 2.5, 0.38, recompute=0.1),
        record("infercept", 1.0, 0.01, recompute=0.0),
        record("infercept", 2.5, 0.02, recompute=0.0),
    ]
    summary = summarize_figure(records)
    authors = summary["policies"]["infercept-authors/estimator=oracle"]
    assert authors["paper_max_rate"] == 2.14 and authors["paper_latency_at_1_ms"] == 18
    assert authors["max_rate"] == pytest.approx(1.0 + 1.5 * 0.18 / 0.36)
    assert summary["checks"]["max_rate_within_15pct"] == {"infercept": False}  # 1.75 against 2.14
    assert summary["checks"]["latency_at_1_within_25pct"] == {"infercept": True}  # 20 against 18
