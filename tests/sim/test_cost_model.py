from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from infercept.v1 import executor_pb2 as pb
from scheduler_svc.sim.cost_profile import CostProfile, from_profile_response
from scheduler_svc.sim.profiles import (
    PROFILES,
    VLLM02_HOST_SIDE,
    a100_40gb_gptj6b,
    a100_gptj6b,
    a100x2_vicuna13b_tp2,
    load_profile,
)
from tests.sim.helpers import tiny_profile


def test_forward_time_is_flat_up_to_saturation_then_linear() -> None:
    profile = tiny_profile(forward_base_s=0.01, forward_s_per_token=0.001, saturation_tokens=64)
    assert profile.forward_s(0) == 0.0
    assert profile.forward_s(1) == profile.forward_s(64) == 0.01
    assert profile.forward_s(65) == pytest.approx(0.011)
    assert profile.forward_s(164) == pytest.approx(0.01 + 100 * 0.001)


def test_swap_time_is_a_fixed_cost_per_call_plus_a_cost_per_block() -> None:
    profile = tiny_profile(swap_out_s_per_block=0.002, swap_in_s_per_block=0.003, swap_fixed_s=0.001)
    assert profile.swap_out_s(0) == profile.swap_in_s(0) == 0.0
    assert profile.swap_out_s(5) == pytest.approx(0.001 + 5 * 0.002)
    assert profile.swap_in_s(5) == pytest.approx(0.001 + 5 * 0.003)


def test_swap_budget_is_what_the_link_moves_during_the_forward() -> None:
    profile = tiny_profile(swap_out_s_per_block=0.002, swap_in_s_per_block=0.002, swap_fixed_s=0.0)
    # 4 tokens per block -> 0.5 ms per token; 10 ms of forward moves 20 tokens.
    assert profile.swap_budget_tokens(64) == pytest.approx(20.0)
    assert profile.swap_budget_tokens(0) == 0.0


def test_a100_gptj6b_reproduces_the_papers_figures() -> None:
    profile = a100_gptj6b()
    # forward ≈ 0.0463 ms·x + 10 ms, flat below S = 384 at its value there.
    assert profile.saturation_tokens == 384
    assert profile.forward_s(1) == profile.forward_s(384) == pytest.approx(0.0463e-3 * 384 + 0.010)
    assert profile.forward_s(484) - profile.forward_s(384) == pytest.approx(100 * 0.0463e-3)
    # Per-iteration swap budget (in + out) ≈ 605 tokens at S: (1 + 2·0.00462)·384 + 2·108.99.
    assert profile.swap_budget_tokens(384) == pytest.approx((1 + 2 * 0.00462) * 384 + 2 * 108.99, abs=0.05)
    # KV ≈ 0.44 MiB per token, copied at ≈ 10 GB/s.
    assert profile.assumptions["kv_MiB_per_token"] == pytest.approx(0.44, abs=0.005)
    assert profile.assumptions["swap_bandwidth_GBps"] == pytest.approx(10.0, abs=0.1)
    # 80 GiB × 0.9 − 12.1 GB of weights − 1 GiB of activations, in 7 MiB blocks of 16 tokens.
    assert profile.num_device_blocks == 8736
    assert profile.num_host_blocks == 4 * 1024 // 7  # 4 GiB of swap space
    assert profile.max_model_len == 2048


def test_a_profile_round_trips_through_json(tmp_path: Path) -> None:
    path = tmp_path / "profile.json"
    for profile in (tiny_profile(), a100_gptj6b()):
        profile.save(path)
        loaded = CostProfile.load(path)
        assert loaded == profile
        assert loaded.assumptions == profile.assumptions
        assert load_profile(str(path)) == profile


def test_a_malformed_profile_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "profile.json"
    values = tiny_profile().to_dict()
    del values["num_device_blocks"]
    path.write_text(str(values))
    with pytest.raises(ValueError, match="not JSON"):
        CostProfile.load(path)
    with pytest.raises(ValueError, match="missing keys \\['num_device_blocks'\\]"):
        CostProfile.from_dict(values)
    with pytest.raises(ValueError, match="forward_base_s must be > 0"):
        tiny_profile(forward_base_s=0.0)
    with pytest.raises(ValueError, match="unknown profile"):
        load_profile("no-such-profile")


def test_profiles_are_found_by_name() -> None:
    assert sorted(PROFILES) == [
        "2xa100-vicuna13b-tp2",
        "a100-40gb-gptj6b",
        "a100-40gb-gptj6b-gpu",
        "a100-40gb-gptj6b-reprofiled",
        "a100-gptj6b",
    ]
    reprofiled = load_profile("a100-40gb-gptj6b-reprofiled")
    assert reprofiled.forward_s(100) == pytest.approx((0.0408 * 100 + 16.92) / 1000)
    assert reprofiled.num_device_blocks == a100_40gb_gptj6b().num_device_blocks
    assert load_profile("a100-gptj6b") == a100_gptj6b()
    assert load_profile("a100-40gb-gptj6b") == a100_40gb_gptj6b()


def test_the_40gb_gptj_profile_is_built_from_the_stated_figures() -> None:
    profile = a100_40gb_gptj6b()
    # 40 GiB x 0.9 - 12.1 GB of weights - 1 GiB, in blocks of 64 tokens (the authors' engine's
    # DeepSpeed block size for 256-wide heads) of 0.4375 MiB each.
    kv_pool_bytes = 40 * 2**30 * 0.9 - 6_053_381_344 * 2 - 2**30
    assert profile.block_size_tokens == 64
    assert profile.num_device_blocks == int(kv_pool_bytes // (64 * 458_752))
    # Host swap: 128 GiB for swap and infercept, 4 GiB for the others.
    assert profile.for_policy("swap").num_host_blocks == profile.for_policy("infercept").num_host_blocks
    assert profile.for_policy("swap").num_host_blocks == 128 * 2**30 // (64 * 458_752)
    assert (
        profile.for_policy("vllm").num_host_blocks == profile.num_host_blocks == 4 * 2**30 // (64 * 458_752)
    )
    # The reported line at every x, plus the KV read at 1.555 TB/s per cached token attended.
    assert profile.forward_s(1) == pytest.approx((0.0463 + 10) / 1000)
    assert profile.forward_s(100) == pytest.approx((0.0463 * 100 + 10) / 1000)
    assert profile.forward_s(1000) == pytest.approx((0.0463 * 1000 + 10) / 1000)
    assert profile.forward_s(50, 50_000) - profile.forward_s(50) == pytest.approx(50_000 * 458_752 / 1.555e12)
    # The scheduler's own view keeps the reported swap budget of about 605 tokens at S = 384.
    assert profile.policy_cost_model().forward_s(384) == pytest.approx(profile.forward_s(384))
    assert profile.swap_budget_tokens(384) == pytest.approx(605, abs=1)
    assert profile.assumptions["gpu_memory"].startswith("A100 40 GB")


def test_the_paper_profile_adds_vllm_0_2s_measured_host_side_to_the_gpu_line() -> None:
    profile, gpu = a100_40gb_gptj6b(), load_profile("a100-40gb-gptj6b-gpu")
    assert gpu.overhead_s(256, 300_000, 100) == 0.0  # the line alone
    assert (
        dataclasses.replace(
            profile,
            name=gpu.name,
            iteration_overhead_s_per_sequence=0.0,
            iteration_overhead_s_per_context_token=0.0,
            iteration_overhead_s_per_returned_token=0.0,
        )
        == gpu
    )  # field for field the GPU profile but for the host side
    host = VLLM02_HOST_SIDE
    # 100 sequences attending 60,000 context tokens, 20 returned tokens: 5.45 + 0.426 + 0.44 ms.
    expected_s = (
        100 * host.s_per_sequence + 60_000 * host.s_per_context_token + 20 * host.s_per_returned_token
    )
    assert profile.overhead_s(100, 60_000, 20) == pytest.approx(expected_s * host.cpu_scale)
    assert profile.overhead_s(100, 60_000, 20) == pytest.approx(5.45e-3 + 0.426e-3 + 0.44e-3)
    assert "benchmarks/vllm02_host_bench.py" in profile.assumptions["host_side_source"]
    assert a100x2_vicuna13b_tp2().iteration_overhead_s_per_sequence == host.s_per_sequence


def test_the_vicuna_profile_is_per_gpu_of_two() -> None:
    profile = a100x2_vicuna13b_tp2()
    kv_bytes_per_token_per_gpu = 2 * 40 * 5120 * 2 // 2
    assert profile.forward_s(1000) == pytest.approx((0.0279 * 1000 + 15.4) / 1000)
    assert profile.forward_s_per_context_token == pytest.approx(kv_bytes_per_token_per_gpu / 1.555e12)
    assert profile.for_policy("infercept").num_host_blocks == 64 * 2**30 // (64 * kv_bytes_per_token_per_gpu)


def test_a_profile_with_host_pools_by_policy_survives_json(tmp_path: Path) -> None:
    profile = a100_40gb_gptj6b()
    path = tmp_path / "profile.json"
    profile.save(path)
    assert CostProfile.load(path) == profile


def test_a_measured_profile_keeps_the_executors_figures() -> None:
    response = pb.ProfileResponse(
        saturation_tokens=255.6,
        forward_base_s=0.02,
        forward_s_per_token=1e-4,
        swap_out_s_per_block=3e-4,
        swap_in_s_per_block=4e-4,
        swap_fixed_s=5e-5,
        model="default",
        device="cuda:0",
        dtype="bfloat16",
        block_size_tokens=16,
    )
    response.forward_samples.add(num_batched_tokens=1, context_tokens=0, num_requests=1, forward_s=0.01)
    response.forward_samples.add(num_batched_tokens=8, context_tokens=0, num_requests=1, forward_s=0.02)
    # 8 decodes of 100 cached tokens each: 8 ms above the curve at 8 tokens, 10 us per context token.
    response.forward_samples.add(num_batched_tokens=8, context_tokens=100, num_requests=8, forward_s=0.028)
    profile = from_profile_response(response, num_device_blocks=100, num_host_blocks=50, max_model_len=4096)
    expected = dataclasses.replace(
        tiny_profile(),
        name="default@cuda:0",
        forward_base_s=0.02,
        forward_s_per_token=1e-4,
        saturation_tokens=256,
        swap_out_s_per_block=3e-4,
        swap_in_s_per_block=4e-4,
        swap_fixed_s=5e-5,
        block_size_tokens=16,
        num_device_blocks=100,
        num_host_blocks=50,
        max_model_len=4096,
        forward_curve=((1, 0.01), (8, 0.02)),
    )
    assert profile == dataclasses.replace(
        expected, forward_s_per_context_token=profile.forward_s_per_context_token
    )
    assert profile.forward_s_per_context_token == pytest.approx(1e-5)
    assert profile.iteration_overhead_s == profile.iteration_overhead_s_per_sequence == 0.0
    assert profile.assumptions["forward_samples"][0] == [1, 0, 1, 0.01]


def test_a_forward_curve_is_interpolated_and_extended_by_the_slope() -> None:
    profile = tiny_profile(forward_curve=((1, 0.003), (64, 0.006), (512, 0.03)), forward_s_per_token=1e-4)
    assert profile.forward_s(0) == 0.0
    assert profile.forward_s(1) == 0.003
    assert profile.forward_s(64) == 0.006
    assert profile.forward_s(288) == pytest.approx(0.018)  # halfway between 64 and 512
    assert profile.forward_s(612) == pytest.approx(0.03 + 100 * 1e-4)
    assert tiny_profile(forward_curve=((4, 0.003), (8, 0.004))).forward_s(2) == 0.003  # flat below


def test_cached_context_and_the_iteration_overhead_add_their_terms() -> None:
    profile = tiny_profile(
        forward_s_per_context_token=1e-6, iteration_overhead_s=0.002, iteration_overhead_s_per_sequence=5e-4
    )
    assert profile.forward_s(10, num_context_tokens=1000) == pytest.approx(profile.forward_s(10) + 0.001)
    assert profile.forward_s(0, num_context_tokens=1000) == 0.0
    assert profile.overhead_s(4) == pytest.approx(0.002 + 4 * 5e-4)
    assert tiny_profile().overhead_s(4, 1000, 10) == 0.0  # the defaults add nothing
    host = tiny_profile(
        iteration_overhead_s_per_context_token=1e-8, iteration_overhead_s_per_returned_token=1e-5
    )
    assert host.overhead_s(4, 1000, 10) == pytest.approx(1000 * 1e-8 + 10 * 1e-5)


def test_a_served_step_is_a_fixed_part_plus_the_profiled_forward_scaled() -> None:
    profiled = tiny_profile(forward_s_per_context_token=1e-6)
    served = tiny_profile(forward_s_per_context_token=1e-6, forward_time_scale=2.0, forward_fixed_s=0.003)
    assert served.profiled_forward_s(10, 1000) == profiled.forward_s(10, 1000) == pytest.approx(0.011)
    assert served.forward_s(10, 1000) == pytest.approx(0.003 + 2 * 0.011)
    assert served.forward_s(0) == 0.0  # no step, no fixed part
    assert served.swap_budget_tokens(10) > profiled.swap_budget_tokens(10)  # a longer step hides more


def test_a_profile_saved_before_the_extra_terms_still_loads(tmp_path: Path) -> None:
    values = tiny_profile().to_dict()
    for key in (
        "forward_curve",
        "forward_time_scale",
        "forward_fixed_s",
        "forward_s_per_context_token",
        "iteration_overhead_s",
        "iteration_overhead_s_per_sequence",
        "iteration_overhead_s_per_context_token",
        "iteration_overhead_s_per_returned_token",
    ):
        del values[key]
    assert CostProfile.from_dict(values) == tiny_profile()
    with_terms = tiny_profile(forward_curve=((1, 0.01), (64, 0.02)), iteration_overhead_s=0.003)
    with_terms.save(tmp_path / "profile.json")
    assert CostProfile.load(tmp_path / "profile.json") == with_terms  # the curve comes back as tuples


def test_bad_extra_terms_are_refused() -> None:
    with pytest.raises(ValueError, match="iteration_overhead_s must be >= 0"):
        tiny_profile(iteration_overhead_s=-0.001)
    with pytest.raises(ValueError, match="forward_time_scale must be > 0"):
        tiny_profile(forward_time_scale=0.0)
    with pytest.raises(ValueError, match="distinct ascending token counts"):
        tiny_profile(forward_curve=((8, 0.01), (4, 0.02)))
    with pytest.raises(ValueError, match="times must be > 0"):
        tiny_profile(forward_curve=((1, 0.0),))
