"""The numba attention backend computes what the torch backend computes, on any ragged batch, and
is what `auto` picks for CPU float32."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

pytest.importorskip("numba")  # before the imports below, which import numba

from executor_svc.attention import create_backend
from executor_svc.attention.numba_backend import (
    NumbaAttentionBackend,
    exp_nonpositive,
    paged_decode_kernel,
    paged_decode_serial,
)
from executor_svc.attention.torch_backend import TorchAttentionBackend
from tests.executor.attention_cases import Case, random_batch, relative_error

F32 = torch.float32
CASES = {
    "gqa-decode-only": Case(F32, 16, 8, 4, 32, [(1, 513), (1, 17), (1, 1), (1, 16), (1, 200)]),
    # Past PARALLEL_MIN_KEYS: the decode rows run on numba's threads (on a machine with several).
    "gqa-decode-many-keys": Case(F32, 16, 8, 4, 32, [(1, 2000), (1, 1500), (1, 900), (3, 40)]),
    "mha-mixed": Case(F32, 4, 4, 4, 16, [(1, 7), (5, 12), (1, 1), (3, 3), (1, 9)]),
    "gqa3-odd-head-dim": Case(F32, 8, 6, 2, 24, [(1, 33), (4, 20), (1, 2)]),
    "mqa-long-chunk": Case(F32, 16, 8, 1, 64, [(40, 45), (1, 50)]),
    "chunks-only": Case(F32, 8, 4, 2, 16, [(9, 9), (2, 30)]),
    "block-size-1": Case(F32, 1, 2, 1, 16, [(2, 6), (1, 3)]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_numba_matches_torch_on_ragged_batches(name: str) -> None:
    batch = random_batch(CASES[name], seed=0, device=torch.device("cpu"))
    outputs = [
        backend.attend(batch.q, batch.kv_layer, backend.prepare(batch.layout))
        for backend in (NumbaAttentionBackend(), TorchAttentionBackend())
    ]
    assert relative_error(outputs[0], outputs[1]) < 1e-5


@pytest.mark.parametrize("kernel", [paged_decode_kernel, paged_decode_serial], ids=["parallel", "serial"])
@pytest.mark.parametrize("kv_heads_per_item", [1, 2, 4])
def test_every_split_of_the_kv_heads_gives_the_same_rows(
    kernel: Callable[..., None], kv_heads_per_item: int
) -> None:
    """Whole rows (a large batch) and single KV heads (a small one), on numba's threads or on the
    caller's, are the same attention."""
    case = Case(F32, 16, 8, 4, 32, [(1, 513), (1, 17), (1, 40)])
    batch = random_batch(case, seed=2, device=torch.device("cpu"))
    expected = TorchAttentionBackend().attend(
        batch.q, batch.kv_layer, TorchAttentionBackend().prepare(batch.layout)
    )
    meta = NumbaAttentionBackend().prepare(batch.layout)
    out = torch.zeros_like(batch.q)
    scale = case.head_dim**-0.5
    kernel(
        batch.q.numpy(), batch.kv_layer.numpy(), meta.rows, meta.limits, meta.tables, scale,
        kv_heads_per_item, out.numpy(),
    )  # fmt: skip
    assert relative_error(out, expected) < 1e-5


def test_scores_hundreds_apart_keep_the_softmax_exact() -> None:
    """Peaks that rise block after block (the online rescaling) and weights below exp's floor."""
    batch = random_batch(CASES["gqa-decode-only"], seed=3, device=torch.device("cpu"))
    q = batch.q * 40
    outputs = [
        backend.attend(q, batch.kv_layer, backend.prepare(batch.layout))
        for backend in (NumbaAttentionBackend(), TorchAttentionBackend())
    ]
    assert relative_error(outputs[0], outputs[1]) < 1e-5


def test_exp_is_float32_exact_down_to_its_floor_and_zero_below() -> None:
    x = np.concatenate((np.linspace(-86.9, 0, 5001), [0.0, -1e-8, -0.3465736, -87.5, -200.0]))
    values = x.astype(np.float32)
    exp_nonpositive(values, np.empty(len(values), dtype=np.int32))
    expected = np.exp(x.astype(np.float32).astype(np.float64))
    kept = x >= -87
    assert np.max(np.abs(values[kept] - expected[kept]) / expected[kept]) < 3e-7
    assert values[0] > 0 and values[-5] == 1.0
    assert np.all(values[~kept] == 0.0)


def test_decode_rows_see_only_their_context() -> None:
    """Keys past a row's context (the rest of its last block, other requests' blocks) change nothing."""
    case = Case(F32, 8, 4, 2, 16, [(1, 5), (1, 12)])
    batch = random_batch(case, seed=1, device=torch.device("cpu"))
    backend = NumbaAttentionBackend()
    before = backend.attend(batch.q, batch.kv_layer, backend.prepare(batch.layout))
    for seq, table in enumerate(batch.layout.block_tables):
        context = batch.layout.context_lens[seq]
        last_block, first_unused_slot = (
            table[(context - 1) // case.block_size],
            (context - 1) % case.block_size + 1,
        )
        batch.kv_layer[last_block, :, first_unused_slot:] = 1e4
    after = backend.attend(batch.q, batch.kv_layer, backend.prepare(batch.layout))
    assert torch.equal(before, after)


def test_auto_picks_numba_for_cpu_float32_only() -> None:
    cpu = torch.device("cpu")
    assert isinstance(create_backend("auto", cpu, torch.float32), NumbaAttentionBackend)
    assert isinstance(create_backend("auto", cpu, torch.bfloat16), TorchAttentionBackend)
    with pytest.raises(ValueError, match="float32"):
        create_backend("numba", cpu, torch.bfloat16)
