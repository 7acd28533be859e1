"""How many cores the executor's compute (torch intra-op and the numba attention kernel) uses."""

from __future__ import annotations

import torch


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
    # numba cannot use more threads than it started its pool with (one per core by default).
    numba.set_num_threads(min(num_threads, numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
