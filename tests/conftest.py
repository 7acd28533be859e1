"""Test-wide set-up: quiet gRPC, the Triton interpreter on CPU, and the `slow` tier.

Tests that start real processes (a stack, an executor, a CLI program) or load the real model are
marked `slow` here, by location, so that `make test-fast` (`pytest -m "not slow"`) runs the unit
tier alone; `make test` runs both. The lists were chosen by measurement (`--durations`): each
entry costs over about a second of set-up and call on this CPU, almost all of it process start-up
and model loading.
"""

from __future__ import annotations

import os

import pytest
import torch

# Set before grpc is imported anywhere in the test process.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

# Triton decides when a kernel is defined (on import of executor_svc.attention) whether it is
# compiled or interpreted, so the interpreter is switched on here, before any test imports it;
# without it the Triton kernels cannot run on CPU. Only without CUDA: on a GPU the tests must
# exercise the compiled kernels.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Folders and files (relative to the repository root) whose every test is slow: each starts a real
# stack or executor process, runs a CLI program, or loads the real default model.
SLOW_PATHS = (
    "tests/e2e/",
    "tests/gateway/test_gateway.py",
    "tests/gateway/test_real_model.py",
    "tests/gateway/test_serve_with_gateway.py",
    "tests/gateway/test_demo.py",
    "tests/executor/test_server.py",
    "tests/executor/test_cli.py",
    "tests/executor/test_exclusive_port.py",
    "tests/executor/test_smollm2.py",
    "tests/harness/test_fidelity.py",
    "tests/loadgen/test_main.py",
)

# Single slow tests in files that are otherwise fast (node ids without parameters).
SLOW_TESTS = (
    "tests/loadgen/test_report.py::test_a_sweep_over_two_policies_on_fresh_stacks",
    "tests/executor/test_triton_backend.py::test_kernel_compiles_for_hopper",
    "tests/benchmarks/test_gpu_check.py::test_the_script_runs_every_part_on_cpu_and_writes_the_verdict",
    "tests/deploy/test_compose.py::test_the_program_accepts_the_command",
    "tests/deploy/test_dockerfile.py::test_the_default_command_is_the_executor_and_valid",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests under SLOW_PATHS and in SLOW_TESTS as `slow`."""
    for item in items:
        node_id = item.nodeid.split("[", 1)[0]
        if node_id.startswith(SLOW_PATHS) or node_id in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
