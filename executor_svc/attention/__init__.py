"""Attention backends behind one interface, chosen by name."""

from __future__ import annotations

import torch

from executor_svc.attention.base import AttentionBackend, AttentionMetadata, BatchLayout
from executor_svc.attention.torch_backend import TorchAttentionBackend

BACKENDS: dict[str, type[AttentionBackend]] = {TorchAttentionBackend.name: TorchAttentionBackend}

__all__ = ["BACKENDS", "AttentionBackend", "AttentionMetadata", "BatchLayout", "create_backend"]


def create_backend(name: str, device: torch.device) -> AttentionBackend:
    """The backend called `name`; "auto" picks the fastest one available on `device`."""
    if name == "auto":
        name = "triton" if device.type == "cuda" and "triton" in BACKENDS else "torch"
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; available: {sorted(BACKENDS)}")
    return BACKENDS[name]()
