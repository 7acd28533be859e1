"""Named cost profiles: the only place the paper's reference figures live.

Each profile is built from figures that were reported and figures that were not, which it must
assume; both are kept in its `assumptions`, so a results file says what it rests on.

`a100-gptj6b` (the InferCept paper's main setup, WORKLOADS.md):

    reported                                   read as
    forward ≈ 0.0463·x + 10 ms                 milliseconds; applied at and above S. Below S the
                                               iteration is flat at T(S) = 0.0463·384 + 10 = 27.78 ms
                                               (DESIGN §5); the paper's own waste model uses the
                                               same figure for a saturated iteration.
    S = 384 tokens
    swap budget ≈ (1 + 2·0.00462)·384 + 2·108.99   = T(S) / c_swap with c_swap = 0.0463 ms / (1 + 2·0.00462)
               ≈ 605 tokens (in + out) at S            = 45.9 µs per token either way, no fixed cost:
                                                       the budget line is T(x) / c_swap exactly
                                                       (10 ms / c_swap = 217.98 = 2·108.99)
    KV ≈ 0.44 MiB per token                    2 (K, V) × 28 layers × 4096 × 2 bytes = 0.4375 MiB

    assumed (not reported)
    GPU: A100 80 GB (80 GiB), 90% of it for the engine (vLLM's default gpu_memory_utilization)
    weights: GPT-J-6B, 6,053,381,344 parameters in fp16 = 12.1 GB
    activations: 1 GiB kept free for the forward pass (vLLM's profiling run reserves its peak)
    KV blocks of 16 tokens (vLLM's default); host swap space 4 GiB (vLLM's default --swap-space)
    max model length 2048 (GPT-J's context, and the paper's)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from scheduler_svc.sim.cost_model import CostProfile

GIB = 1024**3
MIB = 1024**2


def a100_gptj6b() -> CostProfile:
    # Reported (WORKLOADS.md).
    forward_ms_per_token, forward_base_ms = 0.0463, 10.0
    saturation_tokens = 384
    swap_line_factor = 1 + 2 * 0.00462  # swap budget = swap_line_factor * x + 2 * 108.99 tokens
    # Assumed.
    gpu_memory_bytes = 80 * GIB
    gpu_memory_utilization = 0.90
    num_parameters = 6_053_381_344
    activation_reserve_bytes = 1 * GIB
    host_swap_bytes = 4 * GIB
    block_size = 16
    num_layers, hidden_size, bytes_per_value = 28, 4096, 2
    max_model_len = 2048

    kv_bytes_per_token = 2 * num_layers * hidden_size * bytes_per_value
    kv_bytes_per_block = kv_bytes_per_token * block_size
    weight_bytes = num_parameters * bytes_per_value
    kv_pool_bytes = gpu_memory_bytes * gpu_memory_utilization - weight_bytes - activation_reserve_bytes
    forward_at_saturation_s = (forward_ms_per_token * saturation_tokens + forward_base_ms) / 1000
    swap_s_per_token = forward_ms_per_token / swap_line_factor / 1000
    return CostProfile(
        name="a100-gptj6b",
        forward_base_s=forward_at_saturation_s,
        forward_s_per_token=forward_ms_per_token / 1000,
        saturation_tokens=saturation_tokens,
        swap_out_s_per_block=swap_s_per_token * block_size,
        swap_in_s_per_block=swap_s_per_token * block_size,
        swap_fixed_s=0.0,
        block_size_tokens=block_size,
        num_device_blocks=math.floor(kv_pool_bytes / kv_bytes_per_block),
        num_host_blocks=math.floor(host_swap_bytes / kv_bytes_per_block),
        max_model_len=max_model_len,
        assumptions={
            "source": "InferCept paper (ICML 2024), A100 + GPT-J-6B fp16; figures as in WORKLOADS.md",
            "forward_reported": "0.0463 ms * x + 10 ms, read as milliseconds; flat below S at its value at S",
            "saturation_tokens_reported": saturation_tokens,
            "swap_budget_reported": "(1 + 2*0.00462)*384 + 2*108.99 ~= 605 tokens in+out per iteration at S",
            "swap_reading": "45.9 us per token either way, no fixed cost (the budget line is T_fwd(x) / that)",
            "swap_bandwidth_GBps": round(kv_bytes_per_token / swap_s_per_token / 1e9, 2),
            "gpu_memory_GiB": gpu_memory_bytes / GIB,
            "gpu_memory_utilization": gpu_memory_utilization,
            "weights_GB": round(weight_bytes / 1e9, 2),
            "activation_reserve_GiB": activation_reserve_bytes / GIB,
            "kv_MiB_per_token": kv_bytes_per_token / MIB,
            "kv_pool_GiB": round(kv_pool_bytes / GIB, 2),
            "host_swap_GiB": host_swap_bytes / GIB,
            "block_size_tokens": block_size,
            "max_model_len": max_model_len,
        },
    )


PROFILES: dict[str, Callable[[], CostProfile]] = {"a100-gptj6b": a100_gptj6b}


def load_profile(name_or_path: str) -> CostProfile:
    """A named profile, or one saved as JSON at a path; ValueError naming the choices otherwise."""
    if name_or_path in PROFILES:
        return PROFILES[name_or_path]()
    if Path(name_or_path).is_file():
        return CostProfile.load(name_or_path)
    raise ValueError(f"unknown profile {name_or_path!r}: name one of {sorted(PROFILES)} or a JSON file")
