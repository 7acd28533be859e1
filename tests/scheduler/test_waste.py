"""The waste model: each formula by hand, and the discard closed form against its defining sum."""

from __future__ import annotations

import math

import pytest

from scheduler_svc.waste import discard_waste, preserve_waste, swap_waste
from tests.scheduler.test_cost_model import model

# T_fwd = 0.02 s up to 256 tokens, +1e-4 s per token above; T_out(n) = 0.005 + 0.001 n; T_in(n) = 0.005 + 0.002 n
COST = model()


def exact(value: float) -> object:
    return pytest.approx(value, rel=1e-12, abs=0)


# ----- preserve -----


@pytest.mark.parametrize(
    ("context", "remaining_s", "expected"), [(100, 2.5, 250.0), (1, 0.0, 0.0), (0, 5.0, 0.0)]
)
def test_preserve_is_remaining_time_times_context(context: int, remaining_s: float, expected: float) -> None:
    assert preserve_waste(context, remaining_s) == expected


@pytest.mark.parametrize(("context", "remaining_s"), [(-1, 1.0), (10, -0.5)])
def test_preserve_refuses_negatives(context: int, remaining_s: float) -> None:
    with pytest.raises(ValueError):
        preserve_waste(context, remaining_s)


# ----- discard -----


def test_discard_under_saturation_wastes_only_its_own_memory() -> None:
    # n = 4 chunks, T_iter = T_fwd(232) = 0.02 = T_fwd(200): own = 0.02 * (32 + 64 + 96 + 100)
    assert discard_waste(100, 32, 200, 1000, COST) == exact(5.84)


def test_discard_over_saturation_also_stalls_the_batch() -> None:
    # T_iter = T_fwd(282) = 0.0226; own = 0.0226 * 292 = 6.5992; shared = 4 * 0.0026 * 1000 = 10.4
    assert discard_waste(100, 32, 250, 1000, COST) == exact(16.9992)


def test_discard_alone_charges_the_whole_iteration_to_the_batch() -> None:
    # no batch: T_iter = T_fwd(64) = 0.02, every chunk adds a whole iteration; n = 2, own = 0.02 * (64 + 100)
    assert discard_waste(100, 64, 0, 0, COST) == exact(3.28)
    assert discard_waste(100, 64, 0, 50, COST) == exact(3.28 + 2 * 0.02 * 50)


@pytest.mark.parametrize(
    ("context", "chunk", "expected"),
    [
        (64, 32, 0.02 * (32 + 64)),  # exact multiple
        (1, 32, 0.02 * 1),  # one short chunk
        (32, 32, 0.02 * 32),
        (100, 1, 0.02 * 5050),  # token by token: 1 + 2 + ... + 100
    ],
)
def test_discard_chunking(context: int, chunk: int, expected: float) -> None:
    assert discard_waste(context, chunk, 10, 0, COST) == exact(expected)


@pytest.mark.parametrize("context", [1, 31, 32, 33, 500, 4097])
@pytest.mark.parametrize("chunk", [1, 7, 32, 300])
@pytest.mark.parametrize("batch", [0, 100, 300])
def test_discard_closed_form_matches_the_sum(context: int, chunk: int, batch: int) -> None:
    num_chunks = math.ceil(context / chunk)
    iteration_s = COST.forward_s(batch + chunk)
    own = sum(iteration_s * min(k * chunk, context) for k in range(1, num_chunks + 1))
    shared = num_chunks * (iteration_s - COST.forward_s(batch)) * 777
    assert discard_waste(context, chunk, batch, 777, COST) == pytest.approx(own + shared, rel=1e-9)


def test_discard_of_nothing_is_free() -> None:
    assert discard_waste(0, 32, 300, 1000, COST) == 0.0


@pytest.mark.parametrize(
    ("context", "chunk", "batch", "batch_context"),
    [(10, 0, 0, 0), (-1, 8, 0, 0), (10, 8, -1, 0), (10, 8, 0, -1)],
)
def test_discard_refuses_bad_counts(context: int, chunk: int, batch: int, batch_context: int) -> None:
    with pytest.raises(ValueError):
        discard_waste(context, chunk, batch, batch_context, COST)


# ----- swap -----


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        (100, 31.0),  # 7 blocks: (0.012 + 0.019) * 1000
        (112, 31.0),  # still 7
        (113, 34.0),  # 8 blocks: (0.013 + 0.021) * 1000
        (1, 13.0),  # 1 block: (0.006 + 0.007) * 1000
        (0, 0.0),
    ],
)
def test_swap_is_both_copies_times_the_stalled_batch(context: int, expected: float) -> None:
    assert swap_waste(context, 16, 1000, COST) == exact(expected)


def test_swap_with_nobody_waiting_is_free() -> None:
    assert swap_waste(100, 16, 0, COST) == 0.0


@pytest.mark.parametrize(("context", "block_size", "batch_context"), [(10, 0, 5), (-1, 16, 5), (10, 16, -5)])
def test_swap_refuses_bad_counts(context: int, block_size: int, batch_context: int) -> None:
    with pytest.raises(ValueError):
        swap_waste(context, block_size, batch_context, COST)
