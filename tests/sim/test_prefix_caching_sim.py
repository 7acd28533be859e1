"""Prefix caching on the virtual executor: cached positions are not computed (or charged), and
simulated requests share nothing by accident (each prompt's first token is its own)."""

from __future__ import annotations

import pytest

from scheduler_svc.config import SchedulerConfig
from scheduler_svc.sim.driver import simulate
from scheduler_svc.sim.request_plan import RequestPlan, Segment
from tests.sim.helpers import FORWARD_S, SATURATION, one_call_plan, tiny_profile
from tooling.loadgen.workloads import generate_plans

LONG_S = 1e6


def test_a_returning_vllm_apc_request_finds_its_context_cached_and_pays_no_recompute() -> None:
    results = {}
    for policy in ("vllm", "vllm-apc"):
        config = SchedulerConfig(policy=policy, max_batched_tokens=SATURATION, check_invariants=True)
        results[policy] = simulate([one_call_plan()], tiny_profile(), config, warmup_s=0.0, duration_s=LONG_S)
    vllm, apc = (results[p].stats_after for p in ("vllm", "vllm-apc"))
    # 12 computed tokens (3 full blocks) at the pause: vllm recomputes them, vllm-apc finds them.
    assert (vllm["recomputed_tokens"], vllm["prefix_hit_tokens"]) == (12, 0)
    assert (apc["recomputed_tokens"], apc["prefix_hit_tokens"], apc["prefix_hit_blocks"]) == (0, 12, 3)
    # The same iterations; no compute is charged for the hit (one iteration below saturation).
    [apc_record] = results["vllm-apc"].records
    assert apc_record.finish_s == pytest.approx(5 * FORWARD_S + 0.5)


def test_simulated_requests_of_one_length_share_no_prefix() -> None:
    plans = [
        RequestPlan(index, float(index), "test", prompt_tokens=16, segments=(Segment(2),))
        for index in range(3)
    ]
    config = SchedulerConfig(policy="vllm-apc", max_batched_tokens=SATURATION)
    result = simulate(plans, tiny_profile(), config, warmup_s=0.0, duration_s=LONG_S)
    assert all(r.completed for r in result.records)
    assert result.stats_after["prefix_hit_tokens"] == 0 and result.stats_after["prompt_tokens"] == 48


@pytest.mark.parametrize("policy", ["vllm-apc", "continuum"])
def test_every_block_is_free_or_cached_after_a_run_that_completes_everything(policy: str) -> None:
    profile = tiny_profile(num_device_blocks=96, num_host_blocks=12, block_size_tokens=16, max_model_len=512)
    plans = generate_plans("mixed", rate=4.0, duration_s=10.0, seed=3, max_model_len=512)
    config = SchedulerConfig(policy=policy, max_batched_tokens=SATURATION, check_invariants=True)
    result = simulate(plans, profile, config, warmup_s=0.0, duration_s=LONG_S)
    assert all(r.completed for r in result.records) and result.errors == {}
    after = result.stats_after
    assert after["device_blocks_free"] == after["device_blocks_total"] == 96
    assert 0 < after["device_blocks_cached"] <= 96 and after["prefix_hit_tokens"] > 0
