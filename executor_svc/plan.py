"""Decoding and validating a StepPlan against what the executor knows, before applying any of it.

Validation is whole-plan and side-effect free: it computes the block tables the plan would
leave and checks the work against them. A plan that fails is refused with a status code name and
a message naming the offending request or block, and the executor's state stays as it was.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sized

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
class PlannedWork:
    """The plan's batch, resolved: B requests in plan order computing N tokens together, the
    exact tokens (each use_last_sampled token in place), positions and block tables to use."""

    request_ids: list[int]  # (B,)
    start_positions: npt.NDArray[np.int64]  # (B,) position of each request's first computed token
    query_lens: npt.NDArray[np.int64]  # (B,) tokens each request computes
    token_ids: npt.NDArray[np.int64]  # (N,) every computed token, requests back to back
    sample: npt.NDArray[np.bool_]  # (B,) sample after the request's last token
    return_logits: npt.NDArray[np.bool_]  # (B,) return the sampled row's logits
    block_tables: list[list[int]]  # (B, *) each request's device blocks after this plan's updates

    @property
    def num_seqs(self) -> int:
        return len(self.request_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def context_lens(self) -> npt.NDArray[np.int64]:
        """(B,) tokens each request attends to, its own chunk included."""
        return self.start_positions + self.query_lens


@dataclasses.dataclass(frozen=True)
class ValidatedPlan:
    step_id: int
    forget_ids: list[int]
    new_requests: dict[int, SamplingParams]
    block_tables: dict[int, list[int]]  # request id -> its table after this plan's updates
    swap_out: tuple[BlockIds, BlockIds]  # device -> host
    swap_in: tuple[BlockIds, BlockIds]  # host -> device
    device_copies: tuple[BlockIds, BlockIds]
    work: PlannedWork

    @property
    def num_tokens(self) -> int:
        return self.work.num_tokens


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
    updates = plan.block_table_updates
    request_ids, num_kept, num_appended = (
        list(updates.request_ids),
        list(updates.num_kept_blocks),
        list(updates.num_appended_blocks),
    )
    _check_lengths("block_table_updates", request_ids, num_kept, num_appended)
    appended = _unpack("block_table_updates.appended_block_ids", updates.appended_block_ids)
    if sum(num_appended) != len(appended):
        raise PlanRejected(
            "INVALID_ARGUMENT",
            f"block_table_updates: num_appended_blocks add up to {sum(num_appended)}, "
            f"appended_block_ids holds {len(appended)}",
        )
    _check_range("block_table_updates.appended_block_ids", appended, limits.num_device_blocks, "device")
    appended_ids = appended.tolist()
    tables: dict[int, list[int]] = {}
    begin = 0
    for rid, kept, count in zip(request_ids, num_kept, num_appended, strict=True):
        if rid not in live:
            raise PlanRejected("NOT_FOUND", f"block_table_updates: unknown request {rid}")
        if rid in tables:
            raise PlanRejected("INVALID_ARGUMENT", f"block_table_updates: request {rid} updated twice")
        old = [] if rid in new_ids else requests[rid].block_table
        if kept > len(old):
            raise PlanRejected(
                "INVALID_ARGUMENT", f"request {rid}: keeps {kept} blocks but its table has {len(old)}"
            )
        table = old[:kept] + appended_ids[begin : begin + count]
        begin += count
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
) -> PlannedWork:
    """The packed batch read into arrays and checked as a whole; the loops left over requests
    are the membership and table look-ups."""
    batch = plan.work
    request_ids = list(batch.request_ids)
    num = len(request_ids)
    starts = np.array(batch.start_positions, dtype=np.int64)
    counts = np.array(batch.num_tokens, dtype=np.int64)
    sample = np.array(batch.sample, dtype=bool)
    use_last = np.array(batch.use_last_sampled or [False] * num, dtype=bool)
    return_logits = np.array(batch.return_logits or [False] * num, dtype=bool)
    _check_lengths("work", request_ids, starts, counts, sample, use_last, return_logits)
    tokens = _unpack("work.token_ids", batch.token_ids)
    if int(counts.sum()) != len(tokens):
        raise PlanRejected(
            "INVALID_ARGUMENT",
            f"work: num_tokens add up to {int(counts.sum())}, token_ids holds {len(tokens)}",
        )
    if len(set(request_ids)) != num:
        twice = next(rid for i, rid in enumerate(request_ids) if rid in request_ids[:i])
        raise PlanRejected("INVALID_ARGUMENT", f"work: request {twice} appears twice")
    unknown = [rid for rid in request_ids if rid not in live]
    if unknown:
        raise PlanRejected("NOT_FOUND", f"work: unknown request {unknown[0]}")
    _check_flags(request_ids, counts, use_last, sample, return_logits)
    if len(tokens) and tokens.max() >= limits.vocab_size:
        row = int(np.searchsorted(np.cumsum(counts), int(tokens.argmax()), side="right"))
        raise PlanRejected(
            "INVALID_ARGUMENT",
            f"request {request_ids[row]}: token id {int(tokens.max())} is outside the vocabulary "
            f"[0, {limits.vocab_size})",
        )
    if use_last.any():
        tokens = _insert_last_sampled(tokens, request_ids, counts, use_last, requests, new_ids)
    block_tables = [
        tables[rid] if rid in tables else [] if rid in new_ids else requests[rid].block_table
        for rid in request_ids
    ]
    work = PlannedWork(request_ids, starts, counts + use_last, tokens, sample, return_logits, block_tables)
    _check_contexts(work, limits)
    return work


def _check_flags(
    request_ids: list[int],
    counts: npt.NDArray[np.int64],
    use_last: npt.NDArray[np.bool_],
    sample: npt.NDArray[np.bool_],
    return_logits: npt.NDArray[np.bool_],
) -> None:
    empty = (counts == 0) & ~use_last
    if empty.any():
        raise PlanRejected(
            "INVALID_ARGUMENT", f"request {request_ids[int(empty.argmax())]}: no tokens to compute"
        )
    unsampled = return_logits & ~sample
    if unsampled.any():
        rid = request_ids[int(unsampled.argmax())]
        raise PlanRejected("INVALID_ARGUMENT", f"request {rid}: return_logits needs sample")


def _insert_last_sampled(
    tokens: npt.NDArray[np.int64],
    request_ids: list[int],
    counts: npt.NDArray[np.int64],
    use_last: npt.NDArray[np.bool_],
    requests: dict[int, RequestState],
    new_ids: set[int],
) -> npt.NDArray[np.int64]:
    """`tokens` with each use_last_sampled request's last sampled token before its own."""
    last: list[int] = []
    for row in np.flatnonzero(use_last).tolist():
        rid = request_ids[row]
        state = None if rid in new_ids else requests[rid]
        if state is None or state.last_sampled is None:
            raise PlanRejected(
                "FAILED_PRECONDITION", f"request {rid}: use_last_sampled but nothing was sampled yet"
            )
        last.append(state.last_sampled)
    offsets = np.cumsum(counts) - counts  # where each request's own tokens begin
    return np.insert(tokens, offsets[use_last], last)


def _check_contexts(work: PlannedWork, limits: PlanLimits) -> None:
    """Every context within max_model_len and covered by its table, and no device block written
    by two requests."""
    context_lens = work.context_lens
    if len(context_lens) and context_lens.max() > limits.max_model_len:
        row = int(context_lens.argmax())
        raise PlanRejected(
            "OUT_OF_RANGE",
            f"request {work.request_ids[row]}: positions up to {int(context_lens[row])} exceed "
            f"max_model_len {limits.max_model_len}",
        )
    needed = -(-context_lens // limits.block_size)
    table_lens = np.array([len(table) for table in work.block_tables], dtype=np.int64)
    short = table_lens < needed
    if short.any():
        row = int(short.argmax())
        raise PlanRejected(
            "FAILED_PRECONDITION",
            f"request {work.request_ids[row]}: context of {int(context_lens[row])} tokens needs "
            f"{int(needed[row])} device blocks, its table has {int(table_lens[row])}",
        )
    firsts = (work.start_positions // limits.block_size).tolist()
    written = [
        block
        for table, first, end in zip(work.block_tables, firsts, needed.tolist(), strict=True)
        for block in table[first:end]
    ]
    if len(set(written)) != len(written):
        writers: dict[int, int] = {}
        for rid, table, first, end in zip(
            work.request_ids, work.block_tables, firsts, needed.tolist(), strict=True
        ):
            for block in table[first:end]:
                if writers.setdefault(block, rid) != rid:
                    raise PlanRejected(
                        "INVALID_ARGUMENT",
                        f"work: requests {writers[block]} and {rid} both write device block {block}",
                    )


def _check_lengths(name: str, *fields: Sized) -> None:
    lengths = [len(field) for field in fields]
    if len(set(lengths)) > 1:
        raise PlanRejected("INVALID_ARGUMENT", f"{name}: its per-request fields differ in length {lengths}")


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
