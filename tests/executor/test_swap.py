from __future__ import annotations

import numpy as np
import torch

from executor_svc.kv_cache import KVPools, KVShape
from executor_svc.swap import SwapEngine, contiguous_runs


def test_contiguous_runs_merge_only_where_both_sides_are_consecutive() -> None:
    src, dst = np.array([4, 5, 6, 9, 10, 2]), np.array([0, 1, 2, 3, 7, 8])
    assert contiguous_runs(src, dst) == [(4, 0, 3), (9, 3, 1), (10, 7, 1), (2, 8, 1)]
    assert contiguous_runs(np.array([], dtype=np.int64), np.array([], dtype=np.int64)) == []


def test_cpu_swap_moves_whole_blocks_across_every_layer() -> None:
    shape = KVShape(num_layers=3, block_size=4, num_kv_heads=2, head_dim=8, dtype=torch.float32)
    pools = KVPools(shape, num_device_blocks=6, num_host_blocks=5, device=torch.device("cpu"))
    pools.device.copy_(torch.randn_like(pools.device))
    pools.host.copy_(torch.randn_like(pools.host))
    device_before, host_before = pools.device.clone(), pools.host.clone()
    swap = SwapEngine(pools)
    swap.start((np.array([1, 4]), np.array([3, 0])), (np.array([2]), np.array([1])))
    times = swap.finish()
    assert torch.equal(pools.host[:, 3], device_before[:, 1]) and torch.equal(
        pools.host[:, 0], device_before[:, 4]
    )
    # Swap-in ran after swap-out, so device block 1 now holds host block 2.
    assert torch.equal(pools.device[:, 1], host_before[:, 2])
    untouched_device = [0, 2, 3, 4, 5]
    assert torch.equal(pools.device[:, untouched_device], device_before[:, untouched_device])
    assert torch.equal(pools.host[:, [1, 2, 4]], host_before[:, [1, 2, 4]])
    assert times.swap_out_s > 0 and times.swap_in_s > 0


def test_bytes_per_block_counts_keys_and_values_of_every_layer() -> None:
    shape = KVShape(num_layers=4, block_size=16, num_kv_heads=2, head_dim=64, dtype=torch.bfloat16)
    assert shape.bytes_per_block == 4 * 2 * 16 * 2 * 64 * 2
