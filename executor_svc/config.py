"""The executor's configuration: one frozen dataclass, validated once at start-up."""

from __future__ import annotations

import dataclasses

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Without a GPU to size the pool from, a CPU executor gets this many blocks unless told.
DEFAULT_CPU_DEVICE_BLOCKS = 1024
# Default cap of the host pool (pinned memory on CUDA) when --num-host-blocks is not given.
DEFAULT_HOST_POOL_BYTES = 16 * 2**30


@dataclasses.dataclass(frozen=True)
class ExecutorConfig:
    model: str = "default"  # "default" or a Hugging Face-format directory
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    dtype: str = "auto"  # "auto" | one of DTYPES
    block_size: int = 16  # tokens per KV block
    num_device_blocks: int | None = None  # None: from gpu_memory_fraction on CUDA
    gpu_memory_fraction: float = 0.9  # share of the GPU's memory weights + KV may use
    num_host_blocks: int | None = None  # None: as many as device blocks, at most 16 GiB
    seed: int = 0  # seeds requests that bring no seed of their own
    attention_backend: str = "auto"  # "auto" | "torch" | "triton"
    max_model_len: int | None = None  # None: the model's max_position_embeddings
    num_threads: int | None = None  # compute threads (torch intra-op, numba); None: torch's default

    def __post_init__(self) -> None:
        if self.block_size < 1 or self.block_size & (self.block_size - 1):
            raise ValueError(f"block_size must be a power of two, got {self.block_size}")
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise ValueError(f"dtype must be auto or one of {sorted(DTYPES)}, got {self.dtype!r}")
        if not 0 < self.gpu_memory_fraction <= 1:
            raise ValueError(f"gpu_memory_fraction must be in (0, 1], got {self.gpu_memory_fraction}")
        if self.num_device_blocks is not None and self.num_device_blocks < 1:
            raise ValueError(f"num_device_blocks must be >= 1, got {self.num_device_blocks}")
        if self.num_host_blocks is not None and self.num_host_blocks < 0:
            raise ValueError(f"num_host_blocks must be >= 0, got {self.num_host_blocks}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {self.num_threads}")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ValueError(f"max_model_len must be >= 1, got {self.max_model_len}")

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        device = torch.device(self.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for, but torch sees no CUDA device")
        return device

    def torch_dtype(self, device: torch.device, checkpoint_dtype: str | None) -> torch.dtype:
        """auto: float32 on CPU; on CUDA the checkpoint's half type, else bfloat16."""
        if self.dtype != "auto":
            return DTYPES[self.dtype]
        if device.type == "cpu":
            return torch.float32
        return (
            DTYPES.get(checkpoint_dtype or "", torch.bfloat16)
            if checkpoint_dtype != "float32"
            else torch.bfloat16
        )
