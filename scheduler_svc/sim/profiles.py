"""Named cost profiles: the only place the paper's reference figures live.

Each profile is built from figures that were reported and figures that were not, which it must
assume; both are kept in its `assumptions`, so a results file says what it rests on. None is
fitted to a result of the paper: every number below is reported, or derived from a reported
shape (layers, hidden size, bytes), or a stated assumption.

    a100-40gb-gptj6b      the paper's main setup as its scripts and results point to (use this):
                          the GPU line plus vLLM 0.2's host side
    a100-40gb-gptj6b-gpu  the same with the GPU line alone (no host side), as before issue 12's
                          host-side step
    a100-40gb-gptj6b-reprofiled  the main setup with a later re-profiling's forward line (a check)
    2xa100-vicuna13b-tp2  the paper's Vicuna-13B setup, tensor parallel on two A100s (host side too)
    a100-gptj6b           the earlier reading (80 GB card, 4 GiB host swap, flat below S, no KV
                          read cost), kept unchanged so that older results stay reproducible

The paper setups' iteration time (a100-40gb-gptj6b, 2xa100-vicuna13b-tp2):

    T(x, c) = base + per_token · x + kv_read · c

    base + per_token · x   the reported linear fit, applied at every x (forward_curve through
                           x = 1 and x = S, per_token above): a decode batch of 50 costs 12.3 ms,
                           not the 27.8 ms of the fit's value at S. The base (10 ms on GPT-J-6B)
                           holds the read of the weights, 12.1 GB / 1.555 TB/s = 7.8 ms, and the
                           launch overheads: the weights are not charged twice.
    kv_read · c            c = the cached context tokens the iteration's sequences attend (for a
                           decode iteration, the context of every sequence in the batch);
                           kv_read = KV bytes per token / HBM bandwidth, 1.555 TB/s on an A100 40 GB
                           (its datasheet figure), read once per iteration.

The host side (vLLM 0.2's engine outside the CUDA events their harness puts around
`execute_model`, which hold the model's input preparation, forward and sampler; the reported line
is taken to be of that bracket or of the forward alone, so none of the host side is in it):

    T_host = per_sequence · r + per_context_token · c + per_returned_token · n

    r                      sequences in the iteration: their scheduler and block manager, a
                           SequenceGroupMetadata, the sampled token appended, _decode_sequence
                           (detokenize_incrementally), _check_stop with the harness's four stop
                           strings, a RequestOutput, the harness loop's bookkeeping
    c                      the context those sequences attend: _decode_sequence concatenates the
                           whole token list (prompt + output) every step, and every RequestOutput
                           copies the output so far
    n                      tool-returned tokens: resume_request appends each and runs
                           _decode_sequence on it

Each coefficient was measured on the authors' own code (`benchmarks/vllm02_host_bench.py`); none
is fitted to the paper's results (VLLM02_HOST_SIDE below gives the run).

The scheduler's own view (CostProfile.policy_cost_model, what InferCept's waste model and swap
budget use) keeps the flat-then-linear form with forward_base_s = T(S), which gives the reported
605-token swap budget at S.

`a100-gptj6b` (the earlier reading of the InferCept paper's main setup, WORKLOADS.md):

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

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

from scheduler_svc.sim.cost_profile import CostProfile

GIB = 1024**3
MIB = 1024**2


def a100_gptj6b() -> CostProfile:
    """The earlier assumption (80 GB card, 4 GiB host swap for every policy, flat below S, no KV
    read cost): kept unchanged so that results made with it stay reproducible."""
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


A100_40GB_HBM_BYTES_PER_S = 1.555e12  # NVIDIA A100 40 GB (SXM4/PCIe) datasheet: 1,555 GB/s
A100_40GB_MEMORY_BYTES = 40 * GIB
# The authors' engine (their vLLM 0.2 fork on DeepSpeed's ragged kernels) sets its KV block size
# to DeepSpeed's get_kv_block_size(head size): 64 tokens for heads of 256 (GPT-J-6B) and of 128
# (Vicuna-13B) on an A100 (compute capability 8.0), not vLLM's default 16.
PAPER_ENGINE_BLOCK_SIZE = 64
# Host swap pools from the authors' scripts: 128 GiB for swap and infercept (and lazy-swap, which
# swaps too: the same host as infercept), vLLM's default 4 GiB
# for the others (policies not named here, including vllm-apc and continuum, get the default).
LARGE_SWAP_POLICIES = ("swap", "infercept", "infercept-authors", "lazy-swap")


@dataclasses.dataclass(frozen=True)
class HostSide:
    """The host side of an engine's iteration (module docstring), seconds."""

    s_per_sequence: float
    s_per_context_token: float
    s_per_returned_token: float
    cpu_scale: float  # the measuring machine's CPU time -> the paper's host's
    source: str


# Measured by `python -m benchmarks.vllm02_host_bench --authors-git <WukLab/InferCept's git dir>`
# (decode iterations of B = 8, 32, 64, 128, 256 sequences at L = 128, 512, 1024, 1536 tokens, the
# fastest of 20 steps in the fastest of 3 runs, thread CPU time): 0.44-0.48 ms at B 8, 1.6-1.8 ms
# at B 32, 6.8-8.4 ms at B 128, 14.2-16.9 ms at B 256; least squares a + b·B + c·B·L gave a < 0
# (refitted as 0), b = 54.5 us, c = 7.1 ns; a returned token 20-29 us (L 128-1536; 22 at 1024).
# Prompt iterations cost 0.16-0.65 us per prompt token all included (not charged: under 0.5 ms a
# request).
VLLM02_HOST_SIDE = HostSide(
    s_per_sequence=54.5e-6,
    s_per_context_token=7.1e-9,
    s_per_returned_token=22e-6,
    cpu_scale=1.0,
    source="the InferCept authors' vLLM 0.2 fork (HEAD of WukLab/InferCept), its LLMEngine._schedule "
    "(vllm/core/scheduler.py), _process_model_outputs and the harness's loop, run on the CPU without "
    "the model by benchmarks/vllm02_host_bench.py: thread CPU time on this project's development VM "
    "(an Intel Xeon, Python 3.11, transformers 5; SmolLM2's 49,152-token byte-level BPE with GPT-2's "
    "one added and special token standing in for GPT-J's GPT-2 BPE; their sampler's ' dummy' token every "
    "step, as under their harness). Scaled to the paper's host by 1.0: its CPU, Python and transformers versions are not "
    "stated (Python 3.11 runs such code faster than the 3.8-3.10 of vLLM 0.2's time)",
)


def with_host_side(profile: CostProfile, host: HostSide, name: str) -> CostProfile:
    """`profile` with the host side `host` added to every iteration, named `name`."""
    return dataclasses.replace(
        profile,
        name=name,
        iteration_overhead_s_per_sequence=host.s_per_sequence * host.cpu_scale,
        iteration_overhead_s_per_context_token=host.s_per_context_token * host.cpu_scale,
        iteration_overhead_s_per_returned_token=host.s_per_returned_token * host.cpu_scale,
        assumptions={
            **profile.assumptions,
            "host_side": "vLLM 0.2's engine outside the CUDA events around execute_model: per sequence "
            f"{host.s_per_sequence * 1e6:.0f} us + per attended context token {host.s_per_context_token * 1e9:.0f} ns "
            f"+ per tool-returned token {host.s_per_returned_token * 1e6:.0f} us, times {host.cpu_scale} for "
            "the paper's host CPU",
            "host_side_source": host.source,
        },
    )


def a100_40gb_gptj6b() -> CostProfile:
    """GPT-J-6B fp16 on one A100 40 GB, as the paper's scripts and results point to: the GPU line
    and vLLM 0.2's host side."""
    return with_host_side(a100_40gb_gptj6b_gpu(), VLLM02_HOST_SIDE, "a100-40gb-gptj6b")


def a100_40gb_gptj6b_gpu() -> CostProfile:
    """GPT-J-6B fp16 on one A100 40 GB, the GPU line alone (no host side)."""
    # Reported (WORKLOADS.md: the paper and the authors' scripts).
    forward_ms_per_token, forward_base_ms = 0.0463, 10.0
    saturation_tokens = 384  # also InferCept's token budget per iteration in their scripts
    swap_line_factor = 1 + 2 * 0.00462
    gpu_memory_utilization = 0.90
    large_host_swap_bytes, default_host_swap_bytes = 128 * GIB, 4 * GIB
    max_model_len = 2048
    # GPT-J-6B's shape (its config): 28 layers, hidden 4096, fp16; 6,053,381,344 parameters.
    num_layers, hidden_size, bytes_per_value, num_parameters = 28, 4096, 2, 6_053_381_344
    block_size = PAPER_ENGINE_BLOCK_SIZE  # GPT-J's heads are 256 wide
    # Assumed.
    gpu_memory_bytes = A100_40GB_MEMORY_BYTES  # Preserve's knee near 1.7 req/s fits 40 GB, not 80
    activation_reserve_bytes = 1 * GIB  # vLLM's profiling run keeps the forward's peak free

    kv_bytes_per_token = 2 * num_layers * hidden_size * bytes_per_value
    weight_bytes = num_parameters * bytes_per_value
    kv_pool_bytes = gpu_memory_bytes * gpu_memory_utilization - weight_bytes - activation_reserve_bytes
    swap_s_per_token = forward_ms_per_token / swap_line_factor / 1000
    return _linear_profile(
        name="a100-40gb-gptj6b-gpu",
        forward_ms_per_token=forward_ms_per_token,
        forward_base_ms=forward_base_ms,
        saturation_tokens=saturation_tokens,
        swap_s_per_token=swap_s_per_token,
        kv_bytes_per_token=kv_bytes_per_token,
        block_size=block_size,
        kv_pool_bytes=kv_pool_bytes,
        host_swap_bytes=default_host_swap_bytes,
        large_host_swap_bytes=large_host_swap_bytes,
        max_model_len=max_model_len,
        assumptions={
            "source": "InferCept paper (ICML 2024), A100 + GPT-J-6B fp16, with the authors' scripts "
            "(WORKLOADS.md); no figure fitted to the paper's results",
            "forward_reported": "0.0463 ms * x + 10 ms, applied at every x (linear, not flat below S)",
            "forward_base_holds_weights": f"weights {weight_bytes / 1e9:.2f} GB read at 1.555 TB/s = "
            f"{weight_bytes / A100_40GB_HBM_BYTES_PER_S * 1e3:.1f} ms of the 10 ms base; not charged again",
            "kv_read": "every iteration reads the KV of the context its sequences attend: "
            f"{kv_bytes_per_token} B/token / 1.555 TB/s = "
            f"{kv_bytes_per_token / A100_40GB_HBM_BYTES_PER_S * 1e6:.3f} us per context token",
            "hbm_bandwidth_TBps": A100_40GB_HBM_BYTES_PER_S / 1e12,
            "saturation_tokens_reported": saturation_tokens,
            "swap_budget_reported": "(1 + 2*0.00462)*384 + 2*108.99 ~= 605 tokens in+out per iteration at S",
            "swap_reading": "45.9 us per token either way, no fixed cost (the budget line is T_fwd(x) / that)",
            "swap_bandwidth_GBps": round(kv_bytes_per_token / swap_s_per_token / 1e9, 2),
            "gpu_memory": "A100 40 GB (40 GiB) assumed: the paper does not state it; Preserve's "
            "breakdown near 1.7 req/s fits 40 GB (an 80 GB card holds about 2.6x the KV)",
            "gpu_memory_utilization_reported": gpu_memory_utilization,
            "weights_GB": round(weight_bytes / 1e9, 2),
            "activation_reserve_GiB": activation_reserve_bytes / GIB,
            "kv_MiB_per_token": kv_bytes_per_token / MIB,
            "kv_pool_GiB": round(kv_pool_bytes / GIB, 2),
            "host_swap_GiB_reported": {"swap, infercept": 128, "others (vLLM's default)": 4},
            "block_size_tokens_stated": "64: the authors' engine's DeepSpeed get_kv_block_size(256) on an A100",
            "max_model_len": max_model_len,
        },
    )


def a100_40gb_gptj6b_reprofiled() -> CostProfile:
    """a100-40gb-gptj6b with the forward line of a later re-profiling of the same setup by other
    authors (WORKLOADS.md: 0.0408 ms * x + 16.92 ms): a check of how much the result rests on the
    line, everything else unchanged (the swap budget stays the paper's reported 605 tokens)."""
    profile = a100_40gb_gptj6b()
    forward_ms_per_token, forward_base_ms = 0.0408, 16.92

    def line_s(num_tokens: int) -> float:
        return _line_s(forward_ms_per_token, forward_base_ms, num_tokens)

    saturation = profile.saturation_tokens
    return dataclasses.replace(
        profile,
        name="a100-40gb-gptj6b-reprofiled",
        forward_s_per_token=forward_ms_per_token / 1000,
        forward_curve=((1, line_s(1)), (saturation, line_s(saturation))),
        assumptions={
            **profile.assumptions,
            "forward_reported": "0.0408 ms * x + 16.92 ms (a later re-profiling of the same GPT-J-6B "
            "setup by other authors), applied at every x",
            "scheduler_view": "forward_base_s and the swap line as a100-40gb-gptj6b (the paper's)",
        },
    )


def a100x2_vicuna13b_tp2() -> CostProfile:
    """Vicuna-13B fp16, tensor parallel over two A100 40 GB; the profile of one rank (each holds
    half of every layer's KV heads, so the per-token figures are per GPU); vLLM 0.2's host side
    as on GPT-J-6B (its Python does not depend on the model)."""
    return with_host_side(_a100x2_vicuna13b_tp2_gpu(), VLLM02_HOST_SIDE, "2xa100-vicuna13b-tp2")


def _a100x2_vicuna13b_tp2_gpu() -> CostProfile:
    # Reported (WORKLOADS.md).
    forward_ms_per_token, forward_base_ms = 0.0279, 15.4
    gpu_memory_utilization = 0.90
    large_host_swap_bytes, default_host_swap_bytes = 64 * GIB, 4 * GIB  # per GPU
    max_model_len = 2048
    # Vicuna-13B's shape (LLaMA-13B): 40 layers, hidden 5120, fp16; 13,015,864,320 parameters.
    num_layers, hidden_size, bytes_per_value, num_parameters = 40, 5120, 2, 13_015_864_320
    tensor_parallel = 2
    # Assumed.
    gpu_memory_bytes = A100_40GB_MEMORY_BYTES  # as the GPT-J-6B setup; TP2 for a 26 GB model fits 40 GB cards
    saturation_tokens = 384  # not reported for this setup: the GPT-J-6B setup's token budget
    activation_reserve_bytes = 1 * GIB
    block_size = PAPER_ENGINE_BLOCK_SIZE  # Vicuna-13B's heads are 128 wide
    # The link moves the same bytes/s per GPU as on the GPT-J-6B setup (its reported swap line).
    swap_bytes_per_s = 2 * 28 * 4096 * 2 / (0.0463 / (1 + 2 * 0.00462) / 1000)

    kv_bytes_per_token = 2 * num_layers * hidden_size * bytes_per_value // tensor_parallel  # per GPU
    weight_bytes = num_parameters * bytes_per_value // tensor_parallel  # per GPU
    kv_pool_bytes = gpu_memory_bytes * gpu_memory_utilization - weight_bytes - activation_reserve_bytes
    return _linear_profile(
        name="2xa100-vicuna13b-tp2",
        forward_ms_per_token=forward_ms_per_token,
        forward_base_ms=forward_base_ms,
        saturation_tokens=saturation_tokens,
        swap_s_per_token=kv_bytes_per_token / swap_bytes_per_s,
        kv_bytes_per_token=kv_bytes_per_token,
        block_size=block_size,
        kv_pool_bytes=kv_pool_bytes,
        host_swap_bytes=default_host_swap_bytes,
        large_host_swap_bytes=large_host_swap_bytes,
        max_model_len=max_model_len,
        assumptions={
            "source": "InferCept paper (ICML 2024), Vicuna-13B fp16 on two A100s (TP2), with the "
            "authors' scripts (WORKLOADS.md); no figure fitted to the paper's results",
            "forward_reported": "0.0279 ms * x + 15.4 ms, applied at every x",
            "kv_read": f"{kv_bytes_per_token} B/token per GPU / 1.555 TB/s per GPU, both GPUs in parallel",
            "gpu_memory": "A100 40 GB each (40 GiB) assumed, as for GPT-J-6B: 26 GB of weights would fit "
            "one 80 GB card, so tensor parallelism points to 40 GB ones",
            "gpu_memory_utilization_reported": gpu_memory_utilization,
            "saturation_tokens": "384 assumed (not reported for this setup)",
            "swap_reading": "each GPU's link at the GPT-J-6B setup's reported rate "
            f"({swap_bytes_per_s / 1e9:.2f} GB/s), moving its half of the KV",
            "weights_GB_per_gpu": round(weight_bytes / 1e9, 2),
            "activation_reserve_GiB": activation_reserve_bytes / GIB,
            "kv_MiB_per_token_per_gpu": kv_bytes_per_token / MIB,
            "kv_pool_GiB_per_gpu": round(kv_pool_bytes / GIB, 2),
            "host_swap_GiB_per_gpu_reported": {"swap, infercept": 64, "others (vLLM's default)": 4},
            "block_size_tokens_stated": "64: the authors' engine's DeepSpeed get_kv_block_size(128) on an A100",
            "max_model_len": max_model_len,
        },
    )


def _line_s(forward_ms_per_token: float, forward_base_ms: float, num_tokens: int) -> float:
    """Seconds of a forward pass of num_tokens on a reported line (ms per token, base ms)."""
    return (forward_ms_per_token * num_tokens + forward_base_ms) / 1000


def _linear_profile(
    *,
    name: str,
    forward_ms_per_token: float,
    forward_base_ms: float,
    saturation_tokens: int,
    swap_s_per_token: float,
    kv_bytes_per_token: int,
    block_size: int,
    kv_pool_bytes: float,
    host_swap_bytes: float,
    large_host_swap_bytes: float,
    max_model_len: int,
    assumptions: dict[str, object],
) -> CostProfile:
    """A profile whose forward time is the reported line at every x plus the KV read at the A100's
    HBM bandwidth (module docstring), swaps at swap_s_per_token either way, and its pools in whole
    blocks of the given byte sizes: the large host pool for swap and infercept."""
    kv_bytes_per_block = kv_bytes_per_token * block_size
    num_device_blocks = math.floor(kv_pool_bytes / kv_bytes_per_block)
    num_host_blocks = math.floor(host_swap_bytes / kv_bytes_per_block)
    num_large_host_blocks = math.floor(large_host_swap_bytes / kv_bytes_per_block)

    def line_s(num_tokens: int) -> float:
        return _line_s(forward_ms_per_token, forward_base_ms, num_tokens)

    return CostProfile(
        name=name,
        forward_base_s=line_s(saturation_tokens),  # the scheduler's flat-then-linear view
        forward_s_per_token=forward_ms_per_token / 1000,
        saturation_tokens=saturation_tokens,
        swap_out_s_per_block=swap_s_per_token * block_size,
        swap_in_s_per_block=swap_s_per_token * block_size,
        swap_fixed_s=0.0,
        block_size_tokens=block_size,
        num_device_blocks=num_device_blocks,
        num_host_blocks=num_host_blocks,
        max_model_len=max_model_len,
        forward_curve=((1, line_s(1)), (saturation_tokens, line_s(saturation_tokens))),
        forward_s_per_context_token=kv_bytes_per_token / A100_40GB_HBM_BYTES_PER_S,
        num_host_blocks_by_policy=tuple((policy, num_large_host_blocks) for policy in LARGE_SWAP_POLICIES),
        assumptions={
            **assumptions,
            "num_device_blocks": num_device_blocks,
            "num_host_blocks": {"swap, infercept": num_large_host_blocks, "others": num_host_blocks},
        },
    )


PROFILES: dict[str, Callable[[], CostProfile]] = {
    "a100-40gb-gptj6b": a100_40gb_gptj6b,
    "a100-40gb-gptj6b-gpu": a100_40gb_gptj6b_gpu,
    "a100-40gb-gptj6b-reprofiled": a100_40gb_gptj6b_reprofiled,
    "2xa100-vicuna13b-tp2": a100x2_vicuna13b_tp2,
    "a100-gptj6b": a100_gptj6b,
}


def load_profile(name_or_path: str) -> CostProfile:
    """A named profile, or one saved as JSON at a path; ValueError naming the choices otherwise."""
    if name_or_path in PROFILES:
        return PROFILES[name_or_path]()
    if Path(name_or_path).is_file():
        return CostProfile.load(name_or_path)
    raise ValueError(f"unknown profile {name_or_path!r}: name one of {sorted(PROFILES)} or a JSON file")
