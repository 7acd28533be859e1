"""A small cost profile whose times are easy to add up by hand, and hand-built plans."""

from __future__ import annotations

from typing import Any

from scheduler_svc.sim.cost_profile import CostProfile
from scheduler_svc.sim.request_plan import RequestPlan, Segment

FORWARD_S = 0.01  # every iteration of 1..SATURATION tokens
SATURATION = 64


def tiny_profile(**overrides: Any) -> CostProfile:
    values: dict[str, Any] = {
        "name": "tiny",
        "forward_base_s": FORWARD_S,
        "forward_s_per_token": 0.001,
        "saturation_tokens": SATURATION,
        "swap_out_s_per_block": 0.002,
        "swap_in_s_per_block": 0.003,
        "swap_fixed_s": 0.001,
        "block_size_tokens": 4,
        "num_device_blocks": 64,
        "num_host_blocks": 16,
        "max_model_len": 256,
        "assumptions": {"source": "tests"},
    }
    return CostProfile(**{**values, **overrides})


def one_call_plan(
    arrival_s: float = 0.0,
    prompt_tokens: int = 10,
    before_call: int = 3,
    duration_s: float = 0.5,
    returned_tokens: int = 4,
    after_call: int = 2,
    index: int = 0,
) -> RequestPlan:
    """Prompt, generate `before_call`, one tool call, generate `after_call`."""
    return RequestPlan(
        index=index,
        arrival_s=arrival_s,
        workload="test",
        prompt_tokens=prompt_tokens,
        segments=(Segment(before_call, "tool", duration_s, returned_tokens), Segment(after_call)),
    )
