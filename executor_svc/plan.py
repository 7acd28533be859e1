"""Decoding and validating a StepPlan against what the executor knows, before applying any of it.

Validation is whole-plan and side-effect free: it computes the block tables the plan would
leave and checks the work against them. A plan that fails is refused with a status code name and
a message naming the offending request or block, and the executor's state stays as it was.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import numpy.typing as npt

from executor_svc.sampler import SamplingParams, mix_seed
from infercept.v1 import executor_pb2 as pb
from svc_common.wire import unpack_u32

BlockIds = npt.NDArray[np.int64]


class PlanRejected(Exception):
    """The plan is invalid; `code` is a gRPC status code name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclasses.dataclass
class RequestState:
    """What the executor remembers of a request between iterations."""

    sampling: SamplingParams
    block_table: list[int]
    last_sampled: int | None = None


@dataclasses.dataclass(frozen=True)
class PlanLimits:
    num_device_blocks: int
    num_host_blocks: int
    block_size: int
    vocab_size: int
    max_model_len: int
    executor_seed: int


@dataclasses.dataclass(frozen=True)
class SequenceStep:
    """One request's work, resolved: the exact tokens, positions and block table to use."""

    request_id: int
    start_position: int
    token_ids: npt.NDArray[np.int64]
    sample: bool
    return_logits: bool
    block_table: list[int]

    @property
    def context_len(self) -> int:
        return self.start_position + len(self.token_ids)


@dataclasses.dataclass(frozen=True)
class ValidatedPlan:
    step_id: int
    forget_ids: list[int]
    new_requests: dict[int, SamplingParams]
    block_tables: dict[int, list[int]]  # request id -> its table after this plan's updates
    swap_out: tuple[BlockIds, BlockIds]  # device -> host
    swap_in: tuple[BlockIds, BlockIds]  # host -> device
    device_copies: tuple[BlockIds, BlockIds]
    work: list[SequenceStep]

    @property
    def num_tokens(self) -> int:
        return sum(len(step.token_ids) for step in self.work)


def validate_plan(plan: pb.StepPlan, requests: dict[int, RequestState], limits: PlanLimits) -> ValidatedPlan:
    """Check `plan` against the executor's `requests`; raise PlanRejected on the first problem."""
    forget_ids = _forget_ids(plan, requests)
    live = set(requests) - set(forget_ids)
    new_requests = _new_requests(plan, live, limits)
    live |= set(new_requests)
    tables = _block_tables(plan, requests, live, set(new_requests), limits)
    swap_out = _block_map("swap_out", plan.swap_out, limits.num_device_blocks, limits.num_host_blocks)
    swap_in = _block_map("swap_in", plan.swap_in, limits.num_host_blocks, limits.num_device_blocks)
    copies = _block_map(
        "device_copies", plan.device_copies, limits.num_device_blocks, limits.num_device_blocks
    )
    _check_copies_apart(copies, swap_in)
    work = _work(plan, requests, live, set(new_requests), tables, limits)
    return ValidatedPlan(plan.step_id, forget_ids, new_requests, tables, swap_out, swap_in, copies, work)


def _forget_ids(plan: pb.StepPlan, requests: dict[int, RequestState]) -> list[int]:
    forget_ids = list(plan.forget_request_ids)
    for request_id in forget_ids:
        if request_id not in requests:
            raise PlanRejected("NOT_FOUND", f"forget_request_ids: unknown request {request_id}")
    if len(set(forget_ids)) != len(forget_ids):
        raise PlanRejected("INVALID_ARGUMENT", "forget_request_ids lists a request twice")
    return forget_ids


def _new_requests(plan: pb.StepPlan, live: set[int], limits: PlanLimits) -> dict[int, SamplingParams]:
    new: dict[int, SamplingParams] = {}
    for request in plan.new_requests:
        rid = request.request_id
        if rid in live or rid in new:
            raise PlanRejected("ALREADY_EXISTS", f"new_requests: request {rid} is already known")
        s = request.sampling
        if not math.isfinite(s.temperature) or s.temperature < 0:
            raise PlanRejected(
                "INVALID_ARGUMENT", f"request {rid}: temperature must be >= 0, got {s.temperature}"
            )
        if not 0 <= s.top_p <= 1:
            raise PlanRejected("INVALID_ARGUMENT", f"request {rid}: top_p must be in (0, 1], got {s.top_p}")
        seed = s.seed if s.HasField("seed") else mix_seed(limits.executor_seed, rid)
        new[rid] = SamplingParams(float(s.temperature), float(s.top_p or 1.0), int(s.top_k), int(seed))
    return new


def _block_tables(
    plan: pb.StepPlan,
    requests: dict[int, RequestState],
    live: set[int],
    new_ids: set[int],
    limits: PlanLimits,
) -> dict[int, list[int]]:
    tables: dict[int, list[int]] = {}
    for update in plan.block_table_updates:
        rid = update.request_id
        if rid not in live:
            raise PlanRejected("NOT_FOUND", f"block_table_updates: unknown request {rid}")
        if rid in tables:
            raise PlanRejected("INVALID_ARGUMENT", f"block_table_updates: request {rid} updated twice")
        old = [] if rid in new_ids else requests[rid].block_table
        if update.num_kept_blocks > len(old):
            raise PlanRejected(
                "INVALID_ARGUMENT",
                f"request {rid}: keeps {update.num_kept_blocks} blocks but its table has {len(old)}",
            )
        appended = _unpack(f"request {rid} appended_block_ids", update.appended_block_ids)
        _check_range(f"request {rid} appended_block_ids", appended, limits.num_device_blocks, "device")
        table = old[: update.num_kept_blocks] + appended.tolist()
        if len(set(table)) != len(table):
            raise PlanRejected("INVALID_ARGUMENT", f"request {rid}: block table {table} repeats a block")
        tables[rid] = table
    return tables


def _block_map(name: str, block_map: pb.BlockMap, num_src: int, num_dst: int) -> tuple[BlockIds, BlockIds]:
    src = _unpack(f"{name}.src_block_ids", block_map.src_block_ids)
    dst = _unpack(f"{name}.dst_block_ids", block_map.dst_block_ids)
    if len(src) != len(dst):
        raise PlanRejected("INVALID_ARGUMENT", f"{name}: {len(src)} sources but {len(dst)} destinations")
    src_pool = "device" if name != "swap_in" else "host"
    dst_pool = "host" if name == "swap_out" else "device"
    _check_range(f"{name}.src_block_ids", src, num_src, src_pool)
    _check_range(f"{name}.dst_block_ids", dst, num_dst, dst_pool)
    if len(np.unique(dst)) != len(dst):
        raise PlanRejected("INVALID_ARGUMENT", f"{name}: a destination block is written twice")
    return src, dst


def _check_copies_apart(copies: tuple[BlockIds, BlockIds], swap_in: tuple[BlockIds, BlockIds]) -> None:
    """Device copies run after the swaps, each block read or written once: no copy reads a block
    a copy writes (the copy kernel works in place), and none touches a swap-in's destination
    (the order between them would decide the result)."""
    src, dst = copies
    if np.intersect1d(src, dst).size:
        block = int(np.intersect1d(src, dst)[0])
        raise PlanRejected("INVALID_ARGUMENT", f"device_copies: block {block} is both copied from and to")
    touched = np.intersect1d(np.concatenate((src, dst)), swap_in[1])
    if touched.size:
        raise PlanRejected(
            "INVALID_ARGUMENT", f"device_copies: block {int(touched[0])} is also a swap_in destination"
        )


def _work(
    plan: pb.StepPlan,
    requests: dict[int, RequestState],
    live: set[int],
    new_ids: set[int],
    tables: dict[int, list[int]],
    limits: PlanLimits,
) -> list[SequenceStep]:
    steps: list[SequenceStep] = []
    written_blocks: dict[int, int] = {}  # device block -> request writing it this step
    for work in plan.work:
        rid = work.request_id
        if rid not in live:
            raise PlanRejected("NOT_FOUND", f"work: unknown request {rid}")
        if any(step.request_id == rid for step in steps):
            raise PlanRejected("INVALID_ARGUMENT", f"work: request {rid} appears twice")
        state = None if rid in new_ids else requests[rid]
        table = tables.get(rid, state.block_table if state else [])
        tokens = _tokens(work, state, limits)
        step = SequenceStep(rid, work.start_position, tokens, work.sample, work.return_logits, table)
        _check_context(step, limits)
        for block in table[
            step.start_position // limits.block_size : -(-step.context_len // limits.block_size)
        ]:
            if written_blocks.setdefault(block, rid) != rid:
                raise PlanRejected(
                    "INVALID_ARGUMENT",
                    f"work: requests {written_blocks[block]} and {rid} both write device block {block}",
                )
        steps.append(step)
    return steps


def _tokens(work: pb.SequenceWork, state: RequestState | None, limits: PlanLimits) -> npt.NDArray[np.int64]:
    rid = work.request_id
    tokens = _unpack(f"request {rid} token_ids", work.token_ids)
    if work.use_last_sampled:
        if state is None or state.last_sampled is None:
            raise PlanRejected(
                "FAILED_PRECONDITION",
                f"request {rid}: use_last_sampled but nothing was sampled yet",
            )
        tokens = np.concatenate(([state.last_sampled], tokens))
    if not len(tokens):
        raise PlanRejected("INVALID_ARGUMENT", f"request {rid}: no tokens to compute")
    if tokens.max() >= limits.vocab_size:
        raise PlanRejected(
            "INVALID_ARGUMENT",
            f"request {rid}: token id {int(tokens.max())} is outside the vocabulary [0, {limits.vocab_size})",
        )
    if work.return_logits and not work.sample:
        raise PlanRejected("INVALID_ARGUMENT", f"request {rid}: return_logits needs sample")
    return tokens


def _check_context(step: SequenceStep, limits: PlanLimits) -> None:
    rid = step.request_id
    if step.context_len > limits.max_model_len:
        raise PlanRejected(
            "OUT_OF_RANGE",
            f"request {rid}: positions up to {step.context_len} exceed max_model_len {limits.max_model_len}",
        )
    needed_blocks = -(-step.context_len // limits.block_size)
    if len(step.block_table) < needed_blocks:
        raise PlanRejected(
            "FAILED_PRECONDITION",
            f"request {rid}: context of {step.context_len} tokens needs {needed_blocks} device blocks, "
            f"its table has {len(step.block_table)}",
        )


def _unpack(name: str, data: bytes) -> npt.NDArray[np.int64]:
    try:
        return unpack_u32(data)
    except ValueError as error:
        raise PlanRejected("INVALID_ARGUMENT", f"{name}: {error}") from None


def _check_range(name: str, ids: npt.NDArray[np.int64], limit: int, pool: str) -> None:
    if len(ids) and ids.max() >= limit:
        raise PlanRejected(
            "OUT_OF_RANGE",
            f"{name}: block {int(ids.max())} is outside the {pool} pool [0, {limit})",
        )
