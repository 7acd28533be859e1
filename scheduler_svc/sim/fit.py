"""Fitting the simulator's cost terms of a measured profile (cost_profile.py) to its samples.

    forward_curve         the executor's prefill samples (one request, empty context), as they are
    context_s_per_token   decode samples (B requests of C cached tokens each): their time above
                          the curve at B tokens, per cached token, least squares through 0

The terms measured through a live stack are fitted by the harness (tooling/harness/step_fit.py).

Non-negative least squares over every subset of the terms (keeping the best fit whose
coefficients are all >= 0), so that a noisy measurement never gives a negative cost.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class ForwardSample:
    """One of the executor's Profile measurements (ForwardSample in executor.proto)."""

    num_batched_tokens: int
    context_tokens: int  # cached tokens of each request before the step
    num_requests: int
    forward_s: float


def forward_curve(samples: Sequence[ForwardSample]) -> tuple[tuple[int, float], ...]:
    """(tokens, seconds) of the prefill samples (one request from an empty context), ascending;
    the fastest where a token count repeats."""
    best: dict[int, float] = {}
    for s in samples:
        if s.context_tokens == 0 and s.num_requests == 1 and s.num_batched_tokens >= 1 and s.forward_s > 0:
            best[s.num_batched_tokens] = min(s.forward_s, best.get(s.num_batched_tokens, s.forward_s))
    return tuple(sorted(best.items()))


def context_s_per_token(samples: Sequence[ForwardSample], forward_s: Callable[[int], float]) -> float:
    """Seconds per cached context token: the decode samples' excess over `forward_s` (the time
    of their batched tokens from an empty context), fitted through 0; 0 without decode samples."""
    decode = [s for s in samples if s.context_tokens > 0]
    if not decode:
        return 0.0
    context = np.array([[s.num_requests * s.context_tokens] for s in decode], dtype=float)
    excess = np.array([s.forward_s - forward_s(s.num_batched_tokens) for s in decode])
    return float(nonnegative_least_squares(context, excess)[0])


def nonnegative_least_squares(columns: np.ndarray, values: np.ndarray) -> np.ndarray:
    """argmin ||columns @ x - values|| over x >= 0, by trying every subset of the columns (for
    the few columns used here); the all-zero x when no subset fits with x >= 0."""
    num_columns = columns.shape[1]
    best_x, best_error = np.zeros(num_columns), float(np.sum(values**2))
    for size in range(1, num_columns + 1):
        for subset in itertools.combinations(range(num_columns), size):
            solution = np.linalg.lstsq(columns[:, subset], values, rcond=None)[0]
            if np.any(solution < 0):
                continue
            x = np.zeros(num_columns)
            x[list(subset)] = solution
            error = float(np.sum((columns @ x - values) ** 2))
            if error < best_error:
                best_x, best_error = x, error
    return best_x
