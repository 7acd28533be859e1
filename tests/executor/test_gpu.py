"""On a CUDA device, the compiled Triton kernels agree with torch: attention at realistic shapes,
the whole engine's greedy tokens, and block copies to and from pinned host memory.

Marked gpu and skipped without CUDA. Not yet run on a GPU (written on a CPU-only machine).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")  # before the imports below, which import triton

from executor_svc.attention.selection import HeadShape, select_backend
from executor_svc.block_copy import copy_blocks, copy_blocks_torch
from executor_svc.config import ExecutorConfig
from executor_svc.engine import Engine
from executor_svc.random_model import write_random_model
from tests.executor.attention_cases import Case, random_batch, relative_error
from tests.executor.plan_driver import PlanDriver
from tests.executor.reference import assert_matches_reference, load_reference
from tests.executor.test_triton_backend import TINY_MODEL, TOLERANCE, attend_both

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
CUDA = torch.device("cuda")
BF16, F16, F32 = torch.bfloat16, torch.float16, torch.float32
LARGE_CASES = {
    # Llama-3-8B heads: long decode contexts beside a prefill chunk and a resumed chunk.
    "llama8b-bf16": Case(BF16, 16, 32, 8, 128, [(1, 4000), (1, 517), (300, 300), (1, 1), (64, 2100)]),
    "llama8b-fp16-decode": Case(F16, 16, 32, 8, 128, [(1, n) for n in range(100, 3300, 100)]),
    "mha-fp32-bs32": Case(F32, 32, 8, 8, 64, [(1, 999), (129, 700), (1, 33)]),
    "mqa-bf16-bs8": Case(BF16, 8, 16, 1, 128, [(1, 2048), (200, 1000)]),
    "group3-head96-bs64": Case(BF16, 64, 12, 4, 96, [(1, 1500), (77, 90)]),
}


@pytest.mark.parametrize("name", list(LARGE_CASES))
def test_triton_matches_torch_at_realistic_shapes(name: str) -> None:
    case = LARGE_CASES[name]
    ours, expected = attend_both(random_batch(case, seed=0, device=CUDA))
    error = relative_error(ours, expected)
    assert error < TOLERANCE[case.dtype], f"{name}: relative error {error:.2e}"


def _cuda_engine(model_dir: Path, backend: str) -> Engine:
    """An fp32 engine on the GPU with the pools PlanDriver is told about (48 device, 32 host blocks of 16)."""
    return Engine(
        ExecutorConfig(
            model=str(model_dir),
            device="cuda",
            dtype="float32",
            block_size=16,
            num_device_blocks=48,
            num_host_blocks=32,
            attention_backend=backend,
        )
    )


def test_engine_greedy_tokens_equal_torch_backend_on_cuda(tmp_path: Path) -> None:
    write_random_model(tmp_path, TINY_MODEL, seed=5, init_std=0.1)
    rng = random.Random(9)
    prompts = [[rng.randrange(TINY_MODEL.vocab_size) for _ in range(rng.randint(1, 60))] for _ in range(6)]
    tokens = {}
    for backend in ("triton", "torch"):
        engine = _cuda_engine(tmp_path, backend)
        driver = PlanDriver(
            engine.step, block_size=16, num_device_blocks=48, num_host_blocks=32, seed=1, return_logits=False
        )
        tokens[backend] = [r.tokens for r in driver.run(prompts, num_new_tokens=20)]
    assert tokens["triton"] == tokens["torch"]


@pytest.mark.parametrize("direction", ["device_to_host", "host_to_device", "device_to_device"])
def test_copy_blocks_through_pinned_host_memory(direction: str) -> None:
    shape = (2, 40, 2, 16, 8, 128)  # (layers, blocks, 2, block_size, kv_heads, head_dim)
    device_pool = torch.randn(shape, device=CUDA).to(BF16)
    host_pool = torch.randn(shape).to(BF16).pin_memory()
    src, dst = {
        "device_to_host": (device_pool, host_pool),
        "host_to_device": (host_pool, device_pool),
        "device_to_device": (device_pool, device_pool.clone()),
    }[direction]
    expected = dst.clone()
    src_ids = torch.tensor([5, 0, 39, 17, 18], device=CUDA)
    dst_ids = torch.tensor([1, 2, 3, 30, 31], device=CUDA)
    copy_blocks(src[1], dst[1], src_ids, dst_ids)
    torch.cuda.synchronize()
    copy_blocks_torch(src[1], expected[1], src_ids, dst_ids)
    assert torch.equal(dst.cpu(), expected.cpu())


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_greedy_tokens_and_logits_match_transformers_on_cuda(tmp_path: Path, backend: str) -> None:
    """float32 on the GPU against the CPU reference; TF32 stays off (torch's default for matmul)."""
    write_random_model(tmp_path, TINY_MODEL, seed=7, init_std=0.1)
    engine = _cuda_engine(tmp_path, backend)
    driver = PlanDriver(engine.step, block_size=16, num_device_blocks=48, num_host_blocks=32, seed=2)
    rng = random.Random(4)
    prompts = [[rng.randrange(TINY_MODEL.vocab_size) for _ in range(rng.randint(1, 60))] for _ in range(5)]
    requests = driver.run(prompts, num_new_tokens=16)
    assert driver.num_swapped_out > 0 and driver.num_swapped_in > 0
    assert_matches_reference(load_reference(tmp_path), requests, rel_tol=1e-3)


def test_auto_measures_and_picks_a_correct_backend(tmp_path: Path) -> None:
    shape = HeadShape(num_heads=32, num_kv_heads=8, head_dim=128, block_size=16)
    chosen, trials = select_backend(CUDA, BF16, shape, tmp_path / "cache", refresh=True)
    by_name = {t.name: t for t in trials}
    assert set(by_name) == {"torch", "triton"}
    assert chosen == "torch" or by_name[chosen].seconds < by_name["torch"].seconds
