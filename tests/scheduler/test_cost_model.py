"""CostModel: the formulas by hand, the profile it starts from, and what observe learns and ignores."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest

from infercept.v1 import executor_pb2 as pb
from scheduler_svc.cost_model import UNLIMITED_BLOCKS, CostModel


def model(**overrides: float) -> CostModel:
    values: dict[str, float] = dict(
        forward_base_s=0.02,
        forward_s_per_token=1e-4,
        saturation_tokens=256,
        swap_out_s_per_block=1e-3,
        swap_in_s_per_block=2e-3,
        swap_fixed_s=5e-3,
    )
    values.update(overrides)
    return CostModel(**values)  # type: ignore[arg-type]


def step(num_tokens: int, forward_s: float, swap_out_s: float = 0.0, swap_in_s: float = 0.0) -> pb.StepResult:
    return pb.StepResult(
        num_batched_tokens=num_tokens, forward_s=forward_s, swap_out_s=swap_out_s, swap_in_s=swap_in_s
    )


# ----- predictions -----


@pytest.mark.parametrize(
    ("num_tokens", "expected_s"),
    [(-3, 0.0), (0, 0.0), (1, 0.02), (100, 0.02), (256, 0.02), (257, 0.0201), (356, 0.03), (512, 0.0456)],
)
def test_forward_is_flat_up_to_saturation_then_linear(num_tokens: int, expected_s: float) -> None:
    assert model().forward_s(num_tokens) == pytest.approx(expected_s, rel=1e-12, abs=0)


@pytest.mark.parametrize(
    ("num_blocks", "out_s", "in_s"), [(-1, 0.0, 0.0), (0, 0.0, 0.0), (1, 0.006, 0.007), (10, 0.015, 0.025)]
)
def test_swap_is_fixed_plus_per_block(num_blocks: int, out_s: float, in_s: float) -> None:
    assert model().swap_out_s(num_blocks) == pytest.approx(out_s, rel=1e-12, abs=0)
    assert model().swap_in_s(num_blocks) == pytest.approx(in_s, rel=1e-12, abs=0)


@pytest.mark.parametrize(
    ("forward_s", "expected_blocks"),
    [
        (0.03, 10),  # (0.03 - 2 * 0.005) / max(0.001, 0.002) = 10
        (0.0301, 10),  # 10.05 blocks: only whole ones
        (0.0299, 9),
        (0.011, 0),  # 0.5 block after the fixed costs
        (0.01, 0),  # exactly the two fixed costs
        (0.005, 0),  # not even the fixed costs
        (0.0, 0),
    ],
)
def test_swap_budget_charges_both_fixed_costs_and_the_slower_rate(
    forward_s: float, expected_blocks: int
) -> None:
    assert model().swap_budget_blocks(forward_s) == expected_blocks


def test_swap_budget_that_fits_exactly_survives_rounding() -> None:
    # 0.03 / 0.01 == 2.9999999999999996 in floating point
    assert (
        model(swap_fixed_s=0.0, swap_out_s_per_block=0.01, swap_in_s_per_block=0.01).swap_budget_blocks(0.03)
        == 3
    )


def test_swap_budget_is_unlimited_when_blocks_cost_nothing() -> None:
    free = model(swap_out_s_per_block=0.0, swap_in_s_per_block=0.0)
    assert free.swap_budget_blocks(0.02) == UNLIMITED_BLOCKS
    assert free.swap_budget_blocks(0.009) == 0  # the fixed costs still have to fit
    assert (
        model(swap_out_s_per_block=0.0, swap_in_s_per_block=0.0, swap_fixed_s=0.0).swap_budget_blocks(0.0)
        == UNLIMITED_BLOCKS
    )


# ----- construction -----


def test_from_profile_takes_every_figure_and_rounds_saturation() -> None:
    response = pb.ProfileResponse(
        saturation_tokens=383.6,
        forward_base_s=0.031,
        forward_s_per_token=7e-5,
        swap_out_s_per_block=4e-4,
        swap_in_s_per_block=3e-4,
        swap_fixed_s=2e-5,
        block_size_tokens=16,
        forward_samples=[pb.ForwardSample(num_batched_tokens=1, forward_s=0.031)],
    )
    assert CostModel.from_profile(response) == CostModel(
        forward_base_s=0.031,
        forward_s_per_token=7e-5,
        saturation_tokens=384,
        swap_out_s_per_block=4e-4,
        swap_in_s_per_block=3e-4,
        swap_fixed_s=2e-5,
    )


def test_from_profile_keeps_saturation_at_least_one_token() -> None:
    assert (
        CostModel.from_profile(
            pb.ProfileResponse(saturation_tokens=0.2, forward_base_s=0.01)
        ).saturation_tokens
        == 1
    )


@pytest.mark.parametrize(
    "overrides",
    [
        dict(forward_base_s=-0.01),
        dict(forward_s_per_token=math.nan),
        dict(swap_in_s_per_block=math.inf),
        dict(swap_fixed_s=-1e-6),
        dict(saturation_tokens=0),
    ],
)
def test_invalid_model_is_refused(overrides: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(overrides))):
        model(**overrides)


# ----- observe: one step by hand -----


def test_observe_below_saturation_moves_the_base_by_the_weight() -> None:
    learned = model()
    learned.observe(step(100, 0.04), 0, 0)
    assert learned.forward_base_s == pytest.approx(0.021, rel=1e-12)  # 0.02 + 0.05 * (0.04 - 0.02)
    assert learned.forward_s_per_token == 1e-4


def test_observe_above_saturation_moves_the_slope_by_the_weight() -> None:
    learned = model()
    learned.observe(step(512, 0.02 + 256 * 3e-4), 0, 0)  # 2S: full weight, slope sample 3e-4
    assert learned.forward_s_per_token == pytest.approx(1.1e-4, rel=1e-9)
    assert learned.forward_base_s == 0.02


def test_observe_just_above_saturation_counts_for_less() -> None:
    learned = model()
    learned.observe(step(384, 0.02 + 128 * 3e-4), 0, 0)  # S/2 over: half weight
    assert learned.forward_s_per_token == pytest.approx(1.05e-4, rel=1e-9)


def test_observe_above_saturation_faster_than_base_pulls_the_slope_toward_zero() -> None:
    learned = model()
    learned.observe(step(512, 0.01), 0, 0)
    assert learned.forward_s_per_token == pytest.approx(0.95e-4, rel=1e-12)


def test_observe_swap_subtracts_the_fixed_cost() -> None:
    learned = model()
    learned.observe(step(0, 0.0, swap_out_s=0.005 + 10 * 0.003, swap_in_s=0.005 + 4 * 0.001), 10, 4)
    assert learned.swap_out_s_per_block == pytest.approx(0.0011, rel=1e-9)  # 0.001 + 0.05 * 0.002
    assert learned.swap_in_s_per_block == pytest.approx(0.00195, rel=1e-9)  # 0.002 + 0.05 * -0.001
    assert learned.swap_fixed_s == 5e-3


def test_observe_swap_faster_than_the_fixed_cost_never_goes_negative() -> None:
    learned = model()
    learned.observe(step(0, 0.0, swap_out_s=0.001), 1, 0)
    assert learned.swap_out_s_per_block == pytest.approx(0.00095, rel=1e-12)


def test_observe_caps_a_spike_at_four_times_the_estimate() -> None:
    learned = model()
    learned.observe(step(100, 10.0), 0, 0)  # a 10 s stall counts as 0.08 s
    assert learned.forward_base_s == pytest.approx(0.023, rel=1e-12)


# ----- observe: convergence and garbage -----


def true_step(truth: CostModel, num_tokens: int, num_out: int, num_in: int) -> pb.StepResult:
    return step(num_tokens, truth.forward_s(num_tokens), truth.swap_out_s(num_out), truth.swap_in_s(num_in))


@pytest.mark.parametrize("scale", [2.0, 10.0, 0.1])
def test_observe_converges_to_a_changed_device(scale: float) -> None:
    truth = model(
        forward_base_s=0.02 * scale,
        forward_s_per_token=1e-4 * scale,
        swap_out_s_per_block=1e-3 * scale,
        swap_in_s_per_block=2e-3 / scale,
    )
    learned = model()
    for i in range(1500):
        num_tokens = 100 + i % 100 if i % 2 else 512 + i % 300  # below S, and at least 2S
        learned.observe(true_step(truth, num_tokens, 8, 3), 8, 3)
    assert dataclasses.asdict(learned) == pytest.approx(dataclasses.asdict(truth), rel=1e-3)


@pytest.mark.parametrize(
    ("result", "num_out", "num_in"),
    [
        (step(0, 0.5), 0, 0),  # empty iteration
        (step(100, 0.0), 0, 0),
        (step(100, -0.01), 0, 0),
        (step(512, math.nan), 0, 0),
        (step(100, math.inf), 0, 0),
        (step(0, 0.0, swap_out_s=-1.0, swap_in_s=math.nan), 4, 4),
        (step(0, 0.0, swap_out_s=0.0, swap_in_s=0.0), 4, 4),
        (step(0, 0.0, swap_out_s=0.5, swap_in_s=0.5), 0, 0),  # times but no blocks planned
        (pb.StepResult(num_batched_tokens=100, forward_s=0.5, error=pb.PlanError(code="x")), 0, 0),
    ],
)
def test_observe_ignores_garbage(result: pb.StepResult, num_out: int, num_in: int) -> None:
    learned = model()
    before = copy.copy(learned)
    learned.observe(result, num_out, num_in)
    assert learned == before
