"""The Triton block copy moves exactly what the torch one moves (interpreted on CPU)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from executor_svc.attention.triton_backend import IS_INTERPRETED
from executor_svc.block_copy import CHUNK, copy_blocks, copy_blocks_torch, copy_blocks_triton

if not IS_INTERPRETED and not torch.cuda.is_available():
    pytest.skip("Triton kernels are compiled but there is no CUDA device", allow_module_level=True)
DEVICE = torch.device("cpu" if IS_INTERPRETED else "cuda")


def random_pool(num_blocks: int, dtype: torch.dtype, seed: int, block_size: int = 4) -> torch.Tensor:
    """A (3 layers, blocks, 2, block_size, 2 kv heads, 8 dims) pool of random values."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((3, num_blocks, 2, block_size, 2, 8), generator=generator).to(DEVICE, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_triton_copy_equals_torch_copy(dtype: torch.dtype) -> None:
    src = random_pool(10, dtype, seed=0)
    dst_triton = random_pool(7, dtype, seed=1)
    dst_torch = dst_triton.clone()
    src_ids = torch.tensor([3, 9, 0, 5, 3], device=DEVICE)  # a source block may be read twice
    dst_ids = torch.tensor([6, 1, 2, 0, 4], device=DEVICE)
    copy_blocks_triton(src[1], dst_triton[2], src_ids, dst_ids)
    copy_blocks_torch(src[1], dst_torch[2], src_ids, dst_ids)
    assert torch.equal(dst_triton, dst_torch)
    assert torch.equal(dst_triton[2, 6], src[1, 3]) and torch.equal(dst_triton[2, 4], src[1, 3])
    untouched = [b for b in range(7) if b not in dst_ids.tolist()]
    assert torch.equal(dst_triton[2, untouched], random_pool(7, dtype, seed=1)[2, untouched])
    assert torch.equal(dst_triton[[0, 1]], random_pool(7, dtype, seed=1)[[0, 1]]), "other layers kept"


def test_block_larger_than_one_chunk_is_copied_whole() -> None:
    # 2 halves * 256 slots * 2 kv heads * 8 dims = 8192 elements: two programs per block.
    src = random_pool(3, torch.float32, seed=2, block_size=256)
    dst = torch.zeros_like(src)
    assert src[0, 0].numel() > CHUNK
    copy_blocks_triton(
        src[0], dst[0], torch.tensor([2, 0], device=DEVICE), torch.tensor([0, 1], device=DEVICE)
    )
    assert torch.equal(dst[0, 0], src[0, 2]) and torch.equal(dst[0, 1], src[0, 0])
    assert not dst[0, 2].any()


def test_no_blocks_is_a_no_op() -> None:
    src, dst = random_pool(2, torch.float32, seed=3), random_pool(2, torch.float32, seed=4)
    before = dst.clone()
    empty = torch.empty(0, dtype=torch.long, device=DEVICE)
    copy_blocks_triton(src[0], dst[0], empty, empty)
    assert torch.equal(dst, before)


def test_copy_blocks_uses_torch_on_cpu_and_checks_shapes() -> None:
    src, dst = random_pool(4, torch.float32, seed=5).cpu(), random_pool(4, torch.float32, seed=6).cpu()
    copy_blocks(src[0], dst[1], torch.tensor([1]), torch.tensor([3]))
    assert torch.equal(dst[1, 3], src[0, 1])
    with pytest.raises(ValueError, match="blocks differ"):
        copy_blocks(src[0], dst[1, :, :, :2], torch.tensor([1]), torch.tensor([3]))
    with pytest.raises(ValueError, match="contiguous"):
        copy_blocks(src[0, :, :, :2], dst[1, :, :, :2], torch.tensor([1]), torch.tensor([3]))
    with pytest.raises(ValueError, match="must be"):
        copy_blocks(src[0], dst[1], torch.tensor([1, 2]), torch.tensor([3]))
