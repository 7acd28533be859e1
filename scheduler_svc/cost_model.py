"""The policy's cost model: what the scheduler expects an iteration and a swap to cost.

    T_fwd(x) = 0                                                 x <= 0 (no forward pass is run)
             = forward_base_s                                    0 < x <= S
             = forward_base_s + forward_s_per_token * (x - S)    x > S
    T_out(n) = swap_fixed_s + n * swap_out_s_per_block           n > 0 blocks, else 0
    T_in(n)  = swap_fixed_s + n * swap_in_s_per_block            n > 0 blocks, else 0

x is the number of tokens computed in one iteration (all requests together) and S the saturation
point below which the device is not compute-bound (DESIGN §5). The model starts from the
executor's Profile and is refined online from the times every StepResult measures, so the policy
carries no constants of its own. S stays as profiled: one iteration's time cannot tell where the
knee of the curve lies.
"""

from __future__ import annotations

import dataclasses
import math

from infercept.v1 import executor_pb2 as pb

# Weight of one measurement in the exponentially weighted update: the estimate follows a change in
# the device's speed within a few dozen iterations (0.95**45 ~ 0.1) while one noisy step moves it little.
OBSERVE_WEIGHT = 0.05
# A measurement above this multiple of the current estimate counts as this multiple: a stall that is
# not the device's speed (a GC pause, a page fault) moves the estimate by at most
# OBSERVE_WEIGHT * (MAX_SAMPLE_RATIO - 1) = 15%, while a real slow-down still converges geometrically.
MAX_SAMPLE_RATIO = 4.0
# The swap budget when a block's copy costs nothing: large enough never to bind, small enough to add.
UNLIMITED_BLOCKS = 1 << 30
# The fields in seconds, named as in ProfileResponse.
_TIME_FIELDS = (
    "forward_base_s",
    "forward_s_per_token",
    "swap_out_s_per_block",
    "swap_in_s_per_block",
    "swap_fixed_s",
)
# Relative slack when dividing the hidden time by the per-block time, so that a budget which fits
# exactly is not lost to rounding (0.03 / 0.01 == 2.9999999999999996).
_BUDGET_SLACK = 1e-9


@dataclasses.dataclass
class CostModel:
    """T_fwd and T_swap as above. All times in seconds, all >= 0 and finite; S >= 1 token."""

    forward_base_s: float  # T_fwd(x) for 0 < x <= S
    forward_s_per_token: float  # extra seconds per batched token above S
    saturation_tokens: int  # S
    swap_out_s_per_block: float  # device -> host copy time per block
    swap_in_s_per_block: float  # host -> device copy time per block
    swap_fixed_s: float  # fixed cost of one swap call (one direction, one iteration)

    def __post_init__(self) -> None:
        for name in _TIME_FIELDS:
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"cost model: {name} must be finite and >= 0, got {value}")
        if self.saturation_tokens < 1:
            raise ValueError(f"cost model: saturation_tokens must be >= 1, got {self.saturation_tokens}")

    @classmethod
    def from_profile(cls, response: pb.ProfileResponse) -> CostModel:
        """The model the executor measured (Profile rpc); ValueError if it holds a negative or
        non-finite time. S is rounded to whole tokens, at least 1."""
        times_s = {name: getattr(response, name) for name in _TIME_FIELDS}  # same names in the proto
        return cls(saturation_tokens=max(round(response.saturation_tokens), 1), **times_s)

    # ----- predictions -----

    def forward_s(self, num_tokens: int) -> float:
        """T_fwd(num_tokens): seconds of an iteration computing `num_tokens` tokens; 0 for none."""
        if num_tokens <= 0:
            return 0.0
        num_over = max(num_tokens - self.saturation_tokens, 0)
        return self.forward_base_s + self.forward_s_per_token * num_over

    def swap_out_s(self, num_blocks: int) -> float:
        """T_out(num_blocks): seconds of one device -> host copy call; 0 for no blocks."""
        if num_blocks <= 0:
            return 0.0
        return self.swap_fixed_s + num_blocks * self.swap_out_s_per_block

    def swap_in_s(self, num_blocks: int) -> float:
        """T_in(num_blocks): seconds of one host -> device copy call; 0 for no blocks."""
        if num_blocks <= 0:
            return 0.0
        return self.swap_fixed_s + num_blocks * self.swap_in_s_per_block

    def swap_budget_blocks(self, forward_s: float) -> int:
        """Blocks, swap-out and swap-in together, whose copy hides behind a forward pass of
        `forward_s` seconds (the per-iteration swap budget of DESIGN §5):

            floor((forward_s - 2 * swap_fixed_s) / max(swap_out_s_per_block, swap_in_s_per_block))

        Each direction pays its fixed cost once; every block is charged at the slower direction's
        rate, so any split between out and in fits. 0 if the fixed costs alone do not fit;
        UNLIMITED_BLOCKS if a block's copy costs nothing."""
        hidden_s = forward_s - 2 * self.swap_fixed_s
        if hidden_s < 0:
            return 0
        s_per_block = max(self.swap_out_s_per_block, self.swap_in_s_per_block)
        if s_per_block == 0:
            return UNLIMITED_BLOCKS
        return min(math.floor(hidden_s / s_per_block * (1 + _BUDGET_SLACK)), UNLIMITED_BLOCKS)

    # ----- online refinement -----

    def observe(self, result: pb.StepResult, num_swap_out_blocks: int, num_swap_in_blocks: int) -> None:
        """Refine the model from one iteration's measured times, given the blocks its plan swapped.

        Each figure moves toward its measurement by OBSERVE_WEIGHT (an exponentially weighted mean):
        forward_base_s from iterations of 1..S tokens; forward_s_per_token from iterations above S,
        as (forward_s - forward_base_s) / (x - S); the per-block swap times from iterations that
        swapped, as (measured - swap_fixed_s) / blocks. S and swap_fixed_s stay as profiled.
        Refused plans, empty iterations and non-positive or non-finite times teach nothing, so the
        model stays finite and >= 0."""
        if result.HasField("error"):
            return
        self._observe_forward(result.num_batched_tokens, result.forward_s)
        self.swap_out_s_per_block = self._observe_swap(
            self.swap_out_s_per_block, result.swap_out_s, num_swap_out_blocks
        )
        self.swap_in_s_per_block = self._observe_swap(
            self.swap_in_s_per_block, result.swap_in_s, num_swap_in_blocks
        )

    def _observe_forward(self, num_tokens: int, measured_s: float) -> None:
        if num_tokens <= 0 or not _is_positive(measured_s):
            return
        num_over = num_tokens - self.saturation_tokens
        if num_over <= 0:
            self.forward_base_s = _moved_toward(self.forward_base_s, measured_s, OBSERVE_WEIGHT)
            return
        # An iteration just above S measures the slope mostly as noise (the noise is divided by
        # x - S), so its weight grows with the distance from S, reaching full weight at 2S.
        weight = OBSERVE_WEIGHT * min(num_over / self.saturation_tokens, 1.0)
        s_per_token = max(measured_s - self.forward_base_s, 0.0) / num_over
        self.forward_s_per_token = _moved_toward(self.forward_s_per_token, s_per_token, weight)

    def _observe_swap(self, s_per_block: float, measured_s: float, num_blocks: int) -> float:
        """The per-block time after one swap call of `num_blocks` blocks took `measured_s`."""
        if num_blocks <= 0 or not _is_positive(measured_s):
            return s_per_block
        sample = max(measured_s - self.swap_fixed_s, 0.0) / num_blocks
        return _moved_toward(s_per_block, sample, OBSERVE_WEIGHT)


def _is_positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


def _moved_toward(estimate: float, sample: float, weight: float) -> float:
    """estimate + weight * (sample - estimate), with the sample capped at MAX_SAMPLE_RATIO * estimate
    (no cap while the estimate is 0: there is nothing to compare with)."""
    if estimate > 0:
        sample = min(sample, MAX_SAMPLE_RATIO * estimate)
    return estimate + weight * (sample - estimate)
