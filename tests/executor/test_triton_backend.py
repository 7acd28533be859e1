"""The Triton attention backend computes what the torch backend computes, on any ragged batch.

On CPU the kernels run in the Triton interpreter (tests/conftest.py switches it on before
anything imports them); on a CUDA machine these same tests run the compiled kernels on the GPU.
Shapes are tiny because the interpreter is slow. The interpreter accepts some code the compiler
rejects, so the kernel is also compiled for an H100 (sm_90), which needs no GPU.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("triton")  # before the imports below, which import triton

import triton
from triton.backends.compiler import GPUTarget

from executor_svc import attention
from executor_svc.attention import BACKENDS, BatchLayout, create_backend
from executor_svc.attention.torch_backend import TorchAttentionBackend
from executor_svc.attention.triton_backend import (
    IS_INTERPRETED,
    MIN_DOT_DIM,
    Tiling,
    TritonAttentionBackend,
    _paged_attention_kernel,
    choose_tile_tokens,
    padded_block_tables,
    work_mapping,
)
from executor_svc.config import ExecutorConfig
from executor_svc.engine import Engine
from executor_svc.model_config import LlamaConfig
from executor_svc.random_model import write_random_model
from tests.executor.attention_cases import Batch, Case, random_batch, relative_error
from tests.executor.plan_driver import PlanDriver

# Kernels compiled (TRITON_INTERPRET unset or 0) need a GPU to run on.
runs_kernels = pytest.mark.skipif(
    not IS_INTERPRETED and not torch.cuda.is_available(), reason="compiled Triton kernels, no CUDA device"
)
DEVICE = torch.device("cpu" if IS_INTERPRETED else "cuda")
TOLERANCE = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}


def attend_both(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(triton output, torch output) for the same batch."""
    outputs = []
    for backend in (TritonAttentionBackend(), TorchAttentionBackend()):
        outputs.append(backend.attend(batch.q, batch.kv_layer, backend.prepare(batch.layout)))
    return outputs[0], outputs[1]


F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16
CASES = {
    # decode tokens between chunks; contexts ending mid-block; a chunk that is its whole context
    "mha-bs4-mixed": Case(F32, 4, 4, 4, 16, [(1, 7), (5, 12), (1, 1), (3, 3), (1, 9)]),
    "gqa-bs8-mixed": Case(F32, 8, 8, 2, 32, [(6, 30), (1, 17), (1, 8), (11, 11), (2, 9)]),
    # groups of 3 heads (padded to 4) and a head_dim padded from 24 to 32
    "gqa3-bs16-odd-head-dim": Case(F32, 16, 6, 2, 24, [(1, 33), (4, 20), (1, 2)]),
    # one KV head for 8 query heads; a chunk spanning several query tiles
    "mqa-bs16-long-chunk": Case(F32, 16, 8, 1, 16, [(40, 45), (1, 50)]),
    "decode-only-bs8": Case(F32, 8, 4, 2, 16, [(1, 5), (1, 24), (1, 1), (1, 16)]),
    # a block larger than a key tile, and blocks of a single token
    "bs128": Case(F16, 128, 4, 2, 16, [(3, 150), (1, 129)]),
    "bs1": Case(F32, 1, 2, 1, 16, [(2, 6), (1, 3)]),
    "bf16-gqa-bs8": Case(BF16, 8, 4, 2, 16, [(1, 13), (7, 19), (1, 4)]),
    "fp16-mha-bs4": Case(F16, 4, 2, 2, 32, [(9, 9), (1, 22), (2, 6)]),
    "bf16-decode-only-bs16": Case(BF16, 16, 8, 2, 16, [(1, 31), (1, 3)]),
}


@runs_kernels
@pytest.mark.parametrize("name", list(CASES))
def test_matches_torch_backend(name: str) -> None:
    case = CASES[name]
    for seed in range(2):
        ours, expected = attend_both(random_batch(case, seed, DEVICE))
        assert ours.dtype == case.dtype and ours.shape == expected.shape
        error = relative_error(ours, expected)
        assert error < TOLERANCE[case.dtype], f"{name} seed {seed}: relative error {error:.2e}"


@runs_kernels
def test_random_ragged_batches_match_torch_backend() -> None:
    rng = random.Random(7)
    for seed in range(6):
        block_size = rng.choice([4, 8, 16])
        num_kv_heads = rng.choice([1, 2])
        num_heads = num_kv_heads * rng.choice([1, 2, 4])
        seqs = []
        for _ in range(rng.randint(1, 5)):
            query_len = 1 if rng.random() < 0.5 else rng.randint(2, 12)
            seqs.append((query_len, query_len + rng.randint(0, 30)))
        case = Case(F32, block_size, num_heads, num_kv_heads, 16, seqs)
        ours, expected = attend_both(random_batch(case, seed, DEVICE))
        assert relative_error(ours, expected) < 1e-5, case


@runs_kernels
def test_reads_strided_query_and_ignores_other_layers() -> None:
    batch = random_batch(CASES["gqa-bs8-mixed"], seed=3, device=DEVICE)
    # q as a (heads, N, dim) tensor seen transposed: not contiguous.
    q = batch.q.transpose(0, 1).contiguous().transpose(0, 1)
    assert not q.is_contiguous()
    backend = TritonAttentionBackend()
    meta = backend.prepare(batch.layout)
    ours = backend.attend(q, batch.kv_layer, meta)
    # kv_layer is pool[1]; scribbling on pool[0] must change nothing.
    batch.pool[0].fill_(float("nan"))
    again = backend.attend(batch.q, batch.kv_layer, meta)
    assert torch.equal(ours, again)
    assert not torch.isnan(ours).any()


def test_padded_block_tables_cut_each_table_to_its_context() -> None:
    layout = BatchLayout(
        block_size=4,
        query_starts=[0, 1, 3],
        context_lens=[5, 2],
        block_tables=[[7, 3, 9], [4]],
        slot_blocks=torch.zeros(3, dtype=torch.long),
        slot_offsets=torch.zeros(3, dtype=torch.long),
    )
    assert padded_block_tables(layout).tolist() == [[7, 3], [4, 0]]


def test_work_mapping_covers_every_query_once_longest_first() -> None:
    query_lens = np.array([1, 10, 3, 1])
    context_lens = [50, 10, 8, 2]
    seqs, first_queries = work_mapping(query_lens, context_lens, tile_tokens=4)
    tiles = sorted(zip(seqs.tolist(), first_queries.tolist(), strict=True))
    assert tiles == [(0, 0), (1, 0), (1, 4), (1, 8), (2, 0), (3, 0)]
    assert seqs[0] == 0 and seqs[-1] == 3  # 50 keys to read first, 2 last


def test_registered_and_refused_on_cpu_outside_the_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    assert BACKENDS["triton"] is TritonAttentionBackend
    assert not isinstance(create_backend("auto", torch.device("cpu")), TritonAttentionBackend)
    monkeypatch.setattr(attention, "TRITON_RUNS_ON_CPU", False)
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        create_backend("triton", torch.device("cpu"))


TINY_MODEL = LlamaConfig(
    vocab_size=300,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=256,
    rope_theta=10000.0,
)


@runs_kernels
def test_engine_greedy_tokens_equal_torch_backend(tmp_path: Path) -> None:
    write_random_model(tmp_path, TINY_MODEL, seed=5, init_std=0.1)
    rng = random.Random(5)
    prompts = [[rng.randrange(TINY_MODEL.vocab_size) for _ in range(rng.randint(1, 20))] for _ in range(3)]
    tokens = {}
    for backend in ("triton", "torch"):
        engine = Engine(
            ExecutorConfig(
                model=str(tmp_path),
                device=DEVICE.type,
                dtype="float32",
                block_size=4,
                num_device_blocks=24,
                num_host_blocks=16,
                attention_backend=backend,
            )
        )
        assert engine.backend.name == backend
        driver = PlanDriver(
            engine.step, block_size=4, num_device_blocks=24, num_host_blocks=16, seed=3, return_logits=False
        )
        requests = driver.run(prompts, num_new_tokens=6)
        assert driver.num_swapped_out > 0 and driver.num_swapped_in > 0
        tokens[backend] = [r.tokens for r in requests]
    assert tokens["triton"] == tokens["torch"]
    assert len({tuple(t) for t in tokens["torch"]}) > 1, "greedy outputs vary with the prompt"


TRITON_DTYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def compile_for_hopper(
    dtype: torch.dtype, head_dim: int, group_size: int, max_query_len: int, block_size: int
) -> Any:
    """Lower the attention kernel to sm_90 machine code as attend() would launch it there."""
    kernel = _paged_attention_kernel
    group_pad = triton.next_power_of_2(group_size)
    head_dim_pad = max(MIN_DOT_DIM, triton.next_power_of_2(head_dim))
    tiling = Tiling.for_dtype(dtype, head_dim_pad)
    tile_tokens = choose_tile_tokens(max_query_len, group_pad, tiling.target_rows)
    constants = {
        "HEAD_DIM": head_dim,
        "HEAD_DIM_PAD": head_dim_pad,
        "GROUP_SIZE": group_size,
        "GROUP_PAD": group_pad,
        "TILE_TOKENS": tile_tokens,
        "BLOCK_M": max(MIN_DOT_DIM, tile_tokens * group_pad),
        "BLOCK_N": tiling.block_n,
        "BLOCK_SIZE": block_size,
        "DOT_PRECISION": "ieee" if dtype == torch.float32 else "tf32",
        "DOT_IN_FP32": False,
    }
    element = TRITON_DTYPES[dtype]
    # Tensors of the dtype, int32 index tensors, int32 strides.
    signature = {name: "*i32" if name.endswith("_ptr") else "i32" for name in kernel.arg_names}
    signature.update({name: f"*{element}" for name in ("q_ptr", "kv_ptr", "out_ptr")})
    signature.update({"qk_scale": "fp32", **{name: "constexpr" for name in constants}})
    source = triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs=constants)
    target = GPUTarget("cuda", 90, 32)
    options = triton.compiler.make_backend(target).parse_options(
        {"num_warps": 4, "num_stages": 2, "enable_fp_fusion": True}
    )
    return triton.compiler.compile(source, target=target, options=options.__dict__)


def test_kernel_compiles_for_hopper(tmp_path: Path) -> None:
    if IS_INTERPRETED:
        # In an interpreting process triton.language is patched and the compiler fails: use a fresh one.
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                f"{__file__}::{test_kernel_compiles_for_hopper.__name__}",
            ],
            env={**os.environ, "TRITON_INTERPRET": "0", "TRITON_CACHE_DIR": str(tmp_path)},
            cwd=Path(__file__).parents[2],
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return
    try:
        triton.knobs.nvidia.ptxas  # noqa: B018  (raises when this triton build ships no ptxas)
    except RuntimeError:
        pytest.skip("no ptxas in this triton build")
    for dtype, head_dim, group_size, max_query_len in [
        (torch.bfloat16, 128, 4, 1),  # Llama-3-8B decode
        (torch.bfloat16, 128, 4, 512),  # ... with chunks
        (torch.float16, 96, 3, 7),  # padded head_dim and group
        (torch.float32, 128, 1, 512),
    ]:
        compiled = compile_for_hopper(dtype, head_dim, group_size, max_query_len, block_size=16)
        assert compiled.metadata.shared <= 227 * 1024, "more shared memory than an H100 SM has"
