"""How many cores the executor's compute (torch intra-op and the numba attention kernel) uses."""

from __future__ import annotations

import os

import torch


def select_numba_threading_layer() -> None:
    """Make numba run its parallel kernels on its own work queue, unless NUMBA_THREADING_LAYER
    says otherwise. Must run before numba first starts its threads; repeating it is harmless.

    Why: numba's default here would be OpenMP through the system's libgomp, a second OpenMP
    runtime beside torch's own. Their same-named symbols interfere (torch.get_num_threads() was
    seen to report the other runtime's setting) and the two thread pools spin against each other.
    The work queue must not be entered from two threads at once, which the engine never does.
    """
    try:
        import numba
    except ImportError:  # no numba, no layer to choose
        return
    if "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER = "workqueue"  # type: ignore[attr-defined]


def serving_threads(num_cores: int | None = None) -> int:
    """Compute threads for an executor that serves: every core this process may run on
    (`num_cores`, default: its CPU affinity) but one, at least one.

    Why: beside the forward, the gRPC event loop and its I/O threads move every plan and result.
    With one compute thread per core, those threads take a core from a running parallel region,
    which then waits for its slowest thread, and the idle compute threads spin on the cores the
    loop needs between steps. Measured on a shared 2-core machine (tiny model, decode): one thread
    instead of two made the served step at batch 1 ~45% shorter and left batch 256 no slower.
    """
    if num_cores is None:
        num_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(num_cores - 1, 1)


def set_compute_threads(num_threads: int) -> None:
    """Use `num_threads` threads for torch's intra-op work and, in the calling thread, for numba's
    parallel kernels (numba's setting is per calling thread: call this on the engine's thread).

    Raises ValueError for num_threads < 1.
    """
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    torch.set_num_threads(num_threads)
    try:
        import numba
    except ImportError:  # no numba: torch's setting is all there is
        return
    select_numba_threading_layer()
    # numba cannot use more threads than it started its pool with (one per core by default).
    numba.set_num_threads(min(num_threads, numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
