"""Attention backends behind one interface, chosen by name.

"torch" is always there. "numba" (CPU, float32: decode reads the paged pool in place) is registered
when numba imports. "triton" is registered when triton imports; it runs on CUDA, and on CPU only in
the Triton interpreter (``TRITON_INTERPRET=1`` set before this package is imported).
"""

from __future__ import annotations

import torch

from executor_svc.attention.base import AttentionBackend, AttentionMetadata, BatchLayout
from executor_svc.attention.torch_backend import TorchAttentionBackend

BACKENDS: dict[str, type[AttentionBackend]] = {TorchAttentionBackend.name: TorchAttentionBackend}

try:
    from executor_svc.attention.numba_backend import NumbaAttentionBackend
except ImportError:  # no numba in this environment: CPU attention falls back to torch
    pass
else:
    BACKENDS[NumbaAttentionBackend.name] = NumbaAttentionBackend

# Whether the registered triton backend's kernels can run on CPU (they were defined interpreted).
TRITON_RUNS_ON_CPU = False
try:
    import triton  # noqa: F401  (imported only to learn whether it can be)
except ImportError:  # no triton in this environment: the registry just lacks it
    pass
else:
    from executor_svc.attention import triton_backend

    BACKENDS[triton_backend.TritonAttentionBackend.name] = triton_backend.TritonAttentionBackend
    TRITON_RUNS_ON_CPU = triton_backend.IS_INTERPRETED

__all__ = ["BACKENDS", "AttentionBackend", "AttentionMetadata", "BatchLayout", "create_backend"]


def create_backend(name: str, device: torch.device, dtype: torch.dtype = torch.float32) -> AttentionBackend:
    """The backend called `name`; "auto" picks the fastest one available on `device` for `dtype`.

    Raises ValueError for an unknown name, for "triton" on a non-CUDA device outside the Triton
    interpreter, or for "numba" anywhere but CPU float32.
    """
    if name == "auto":
        name = _auto_backend_name(device, dtype)
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; available: {sorted(BACKENDS)}")
    if name == "numba" and (device.type != "cpu" or dtype != torch.float32):
        raise ValueError(f"the numba attention backend runs on CPU in float32, not {device.type} {dtype}")
    if name == "triton" and device.type != "cuda" and not TRITON_RUNS_ON_CPU:
        raise ValueError(
            f"the triton attention backend needs a CUDA device, not {device.type!r}; on CPU it runs "
            "only in the Triton interpreter (set TRITON_INTERPRET=1 before starting; tests only)"
        )
    return BACKENDS[name]()


def _auto_backend_name(device: torch.device, dtype: torch.dtype) -> str:
    # On CUDA the engine measures first (selection.py); without a measurement, the safe one.
    if device.type == "cuda":
        return "torch"
    return "numba" if "numba" in BACKENDS and dtype == torch.float32 else "torch"
