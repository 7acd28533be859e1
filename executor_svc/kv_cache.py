"""The device and host KV pools: fixed-size blocks, allocated once at start-up.

The executor never decides which block holds what; it only reads and writes the blocks the plan
names. Layout (see attention/base.py): ``(layers, blocks, 2, block_size, kv_heads, head_dim)``.
"""

from __future__ import annotations

import dataclasses

import torch

from executor_svc.model_config import LlamaConfig


@dataclasses.dataclass(frozen=True)
class KVShape:
    """Everything that sizes one block."""

    num_layers: int
    block_size: int
    num_kv_heads: int
    head_dim: int
    dtype: torch.dtype

    @classmethod
    def for_model(cls, config: LlamaConfig, block_size: int, dtype: torch.dtype) -> KVShape:
        return cls(config.num_hidden_layers, block_size, config.num_key_value_heads, config.head_dim, dtype)

    def pool_shape(self, num_blocks: int) -> tuple[int, ...]:
        return (self.num_layers, num_blocks, 2, self.block_size, self.num_kv_heads, self.head_dim)

    @property
    def bytes_per_block(self) -> int:
        """Keys and values of one block across all layers."""
        elements = self.num_layers * 2 * self.block_size * self.num_kv_heads * self.head_dim
        return elements * torch.empty((), dtype=self.dtype).element_size()


class KVPools:
    """The device pool (attention reads it) and the host pool (swapped-out blocks wait there)."""

    def __init__(
        self, shape: KVShape, num_device_blocks: int, num_host_blocks: int, device: torch.device
    ) -> None:
        if num_device_blocks < 1:
            raise ValueError(f"the device pool needs at least one block, got {num_device_blocks}")
        if num_host_blocks < 0:
            raise ValueError(f"num_host_blocks must be >= 0, got {num_host_blocks}")
        self.shape = shape
        self.device = torch.zeros(shape.pool_shape(num_device_blocks), dtype=shape.dtype, device=device)
        # Pinned host memory lets copies run asynchronously on a CUDA side stream; a CPU-only
        # torch build cannot pin (it raises), so plain memory there.
        self.host = torch.zeros(
            shape.pool_shape(num_host_blocks), dtype=shape.dtype, pin_memory=device.type == "cuda"
        )

    @property
    def num_device_blocks(self) -> int:
        return self.device.shape[1]

    @property
    def num_host_blocks(self) -> int:
        return self.host.shape[1]


def device_blocks_that_fit(shape: KVShape, device: torch.device, memory_fraction: float) -> int:
    """Blocks that fit in `memory_fraction` of the CUDA device's total memory, minus what is in use."""
    free_bytes, total_bytes = torch.cuda.mem_get_info(device)
    used_bytes = total_bytes - free_bytes
    budget_bytes = int(total_bytes * memory_fraction) - used_bytes
    if budget_bytes < shape.bytes_per_block:
        raise ValueError(
            f"--gpu-memory-fraction {memory_fraction} leaves no room for KV blocks: "
            f"{used_bytes / 2**30:.1f} GiB of {total_bytes / 2**30:.1f} GiB already in use"
        )
    return budget_bytes // shape.bytes_per_block
