"""Test-wide set-up: quiet gRPC, a private model cache, and seeded random checkpoints."""

from __future__ import annotations

import os

import torch

# Set before grpc is imported anywhere in the test process.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

# Triton decides when a kernel is defined (on import of executor_svc.attention) whether it is
# compiled or interpreted, so the interpreter is switched on here, before any test imports it;
# without it the Triton kernels cannot run on CPU. Only without CUDA: on a GPU the tests must
# exercise the compiled kernels.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
