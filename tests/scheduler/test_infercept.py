"""Scenarios for the infercept policy on a fabricated cost model (tests.scheduler.harness): on the
harness clock an iteration takes 1 s and a block copy 0.1 s each way, so an iteration's swap
budget is 10 blocks and swapping n blocks is worth it only for calls expected to last > 0.2·n s."""

from __future__ import annotations

import logging

import pytest
import structlog

from infercept.v1 import generation_pb2 as gen
from scheduler_svc.policies import InferceptOptions, InferceptPolicy, create_policy
from svc_common.step_wire import unpack_work
from tests.scheduler import test_scheduler_random
from tests.scheduler.harness import BLOCK_SIZE, Harness, ids

SWAP_BUDGET_BLOCKS = 10  # harness_cost_model: 1 s iteration / 0.1 s per block


@pytest.fixture(autouse=True)
def quiet_logs() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def scripted(
    prompt_len: int, tool: str, expected_s: float, max_tokens: int = 4, first: int = 1
) -> gen.GenerateRequest:
    """A request that calls `tool` (hinted to last `expected_s`) after 2 generated tokens."""
    return gen.GenerateRequest(
        prompt_token_ids=[first + i % 200 for i in range(prompt_len)],
        sampling=gen.SamplingParams(max_tokens=max_tokens),
        script=[gen.ScriptedCall(after_tokens=2, tool=tool, expected_duration_s=expected_s)],
    )


def pause_long_and_short(h: Harness) -> tuple[int, int]:
    """A (40-token prompt, a 1000 s call) and B (8 tokens, a 50 ms call), both paused."""
    a = h.add(scripted(40, "search", 1000.0))
    b = h.add(scripted(8, "calc", 0.05, first=7))
    h.run()
    assert h.interceptions(a) and h.interceptions(b)
    return a, b


def test_long_call_with_a_large_context_gives_way_and_a_50ms_call_is_preserved() -> None:
    h = Harness("infercept", num_device_blocks=24, estimator="oracle")
    a, b = pause_long_and_short(h)
    layouts = h.scheduler.blocks.layouts
    assert (len(layouts[a].device), len(layouts[b].device)) == (11, 3)  # 42 and 10 tokens, 10 free
    assert not h.scheduler.stats.swap_out_blocks  # memory is not short: nothing moves yet
    c = h.add(scripted(60, "calc", 1.0, first=3))  # needs 15 blocks
    for _ in range(4):
        h.step()
    assert len(layouts[b].device) == 3, "the 50 ms call's context stays on the device"
    assert len(layouts[a].device) < 11, "the 1000 s call's context gave way"
    assert h.scheduler.stats.swap_out_blocks or h.scheduler.stats.paused_discards
    assert h.scheduler.requests[c].num_computed > 0


def test_the_outputs_match_a_preserving_run() -> None:
    outputs = {}
    for policy in ("preserve", "infercept"):
        h = Harness(policy, num_device_blocks=24, estimator="oracle")
        a, b = pause_long_and_short(h)
        c = h.add(scripted(60, "calc", 1.0, first=3))
        for _ in range(6):
            h.step()
        h.resume(a, [5, 6, 7])
        h.resume(b, [8])
        h.run()
        for _ in range(10):  # c's own call
            if c in h.scheduler.requests and h.scheduler.requests[c].pending_call:
                h.resume(c, [9, 9])
            h.run()
        outputs[policy] = [h.tokens(r) for r in (a, b, c)]
        assert all(h.finished(r).finish_reason == "length" for r in (a, b, c))
    assert outputs["infercept"] == outputs["preserve"]


def test_swap_in_is_budgeted_front_first_and_computes_only_once_back() -> None:
    h = Harness("infercept", num_device_blocks=24, estimator="oracle")
    a, _ = pause_long_and_short(h)
    h.add(scripted(60, "calc", 1.0, first=3))
    for _ in range(3):
        h.step()
    layout = h.scheduler.blocks.layouts[a]
    assert len(layout.host) > 0, "the long call was swapped out (partly)"
    host_before = list(layout.host)
    h.resume(a, [5, 6, 7])
    plans = [h.step() for _ in range(8)]
    swapped_in = [src for p in plans for src in ids(p.swap_in.src_block_ids)]
    assert swapped_in[: len(host_before)] == host_before  # front first, in logical order
    first_compute = next(i for i, p in enumerate(plans) if h.work(p, a) is not None)
    assert all(ids(p.swap_in.src_block_ids) == [] for p in plans[first_compute + 1 :] if h.work(p, a))
    assert not layout.host


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_swaps_stay_within_the_budget_and_memory(seed: int) -> None:
    h, _ = test_scheduler_random.simulate("infercept", seed)  # checks invariants every iteration
    for plan in h.plans:
        moved = len(ids(plan.swap_out.src_block_ids)) + len(ids(plan.swap_in.src_block_ids))
        assert moved <= SWAP_BUDGET_BLOCKS, f"plan {plan.step_id} moves {moved} blocks"
    assert h.scheduler.stats.swap_out_blocks > 0


def discard_the_long_call(disabled: tuple[str, ...] = ()) -> tuple[Harness, int]:
    """A harness (token budget 16, no swap space) whose 1000 s call was discarded to make room,
    then returned one token: (harness, its request id)."""
    h = Harness(
        "infercept",
        max_batched_tokens=16,
        num_device_blocks=24,
        num_host_blocks=0,  # no swap space: the long call must be discarded
        estimator="oracle",
        disabled_techniques=disabled,
    )
    a, _ = pause_long_and_short(h)
    h.add(scripted(60, "calc", 1.0, first=3))
    for _ in range(4):
        h.step()
    assert h.scheduler.stats.paused_discards == 1 and not h.scheduler.blocks.layouts[a].device
    h.resume(a, [5])
    return h, a


def test_chunked_recompute_fills_the_budget_left_after_decodes() -> None:
    h, a = discard_the_long_call()
    chunks = []
    for _ in range(30):
        plan = h.step()
        assert sum(len(w.token_ids) for w in unpack_work(plan.work)) <= 16
        if (work := h.work(plan, a)) is not None and work.start_position < 42:
            chunks.append(len(work.token_ids))
    assert len(chunks) >= 3 and sum(chunks) >= 42, f"recomputed in chunks {chunks}"


def test_without_chunking_a_discarded_context_is_recomputed_at_once() -> None:
    h, a = discard_the_long_call(disabled=("chunked-recompute",))
    plans = [h.step() for _ in range(20)]
    recompute = [len(w.token_ids) for p in plans for w in unpack_work(p.work) if w.request_id == a]
    assert recompute[0] == 42 + 1, "the whole 42-token context and the returned token, past the budget of 16"


@pytest.mark.parametrize(("policy", "first"), [("infercept", "returning"), ("vllm", "late")])
def test_fcfs_by_original_arrival_across_queues(policy: str, first: str) -> None:
    h = Harness(policy, max_batched_tokens=8, num_device_blocks=40, estimator="oracle")
    returning = h.add(scripted(8, "search", 1000.0))
    h.run()
    late = h.add(scripted(40, "calc", 1.0, first=3))  # arrives while the first one is paused
    h.step()
    h.resume(returning, [5, 6])
    plan = h.step()
    assert unpack_work(plan.work)[0].request_id == {"returning": returning, "late": late}[first]


def test_options_and_errors() -> None:
    policy = create_policy("infercept", "elapsed", ("swap-budget", "min-waste"))
    assert isinstance(policy, InferceptPolicy)
    assert policy.options == InferceptOptions(
        "elapsed", chunked_recompute=True, swap_budget=False, min_waste=False
    )
    assert policy.swap_budget_blocks(10) is None and not policy.pipelines_swaps
    with pytest.raises(ValueError, match="unknown technique"):
        create_policy("infercept", "history", ("warp-drive",))
    with pytest.raises(ValueError, match="unknown duration estimator"):
        create_policy("infercept", "crystal-ball")
    with pytest.raises(ValueError, match="has no techniques"):
        create_policy("vllm", "history", ("min-waste",))
    with pytest.raises(ValueError, match="needs the executor's cost model"):
        create_policy("infercept").bind_cost_model(None)
    assert BLOCK_SIZE == 4  # the scenarios' block counts assume it
