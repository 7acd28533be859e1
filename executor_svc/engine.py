"""The executor's engine: carries out one StepPlan and returns its StepResult.

One step: validate the whole plan (refuse it untouched if invalid), forget and register
requests, update block tables, start the swaps, run one ragged forward pass (each layer first
waiting for its own swaps, then making the plan's device block copies: copy-on-write), sample,
report. Not thread-safe: the server calls it from one thread.
"""

from __future__ import annotations

import time

import structlog
import torch

from executor_svc import __version__
from executor_svc.attention import create_backend
from executor_svc.attention.selection import HeadShape, select_backend
from executor_svc.batch import build_batch
from executor_svc.block_copy import copy_blocks
from executor_svc.checkpoint import read_config
from executor_svc.config import DEFAULT_CPU_DEVICE_BLOCKS, DEFAULT_HOST_POOL_BYTES, ExecutorConfig
from executor_svc.kv_cache import KVPools, KVShape, device_blocks_that_fit
from executor_svc.loading import load_model, resolve_model_dir
from executor_svc.model_config import LlamaConfig
from executor_svc.plan import PlanLimits, PlanRejected, RequestState, ValidatedPlan, validate_plan
from executor_svc.random_model import cache_dir
from executor_svc.sampler import sample
from executor_svc.swap import SwapEngine
from executor_svc.threads import set_compute_threads
from infercept.v1 import executor_pb2 as pb
from svc_common.step_wire import WIRE_VERSION
from svc_common.wire import pack_f32

log = structlog.get_logger(__name__)


class Engine:
    def __init__(self, config: ExecutorConfig) -> None:
        self.config = config
        self.claim_thread()
        self.device = config.torch_device()
        model_dir = resolve_model_dir(config.model)
        self.dtype = config.torch_dtype(self.device, read_config(model_dir).torch_dtype)
        self.loaded = load_model(model_dir, self.device, self.dtype)
        model_config = self.loaded.config
        self.kv_shape = KVShape.for_model(model_config, config.block_size, self.dtype)
        num_device_blocks = config.num_device_blocks or (
            device_blocks_that_fit(self.kv_shape, self.device, config.gpu_memory_fraction)
            if self.device.type == "cuda"
            else DEFAULT_CPU_DEVICE_BLOCKS
        )
        num_host_blocks = config.num_host_blocks
        if num_host_blocks is None:
            # As many as the device has, but never more pinned memory than DEFAULT_HOST_POOL_BYTES.
            num_host_blocks = min(num_device_blocks, DEFAULT_HOST_POOL_BYTES // self.kv_shape.bytes_per_block)
        self.pools = KVPools(self.kv_shape, num_device_blocks, num_host_blocks, self.device)
        self.backend = create_backend(self._backend_name(model_config), self.device, self.dtype)
        self.swap = SwapEngine(self.pools)
        self.requests: dict[int, RequestState] = {}
        self._last_step_end_s: float | None = None  # perf_counter at the end of the last step
        self.limits = PlanLimits(
            num_device_blocks=num_device_blocks,
            num_host_blocks=num_host_blocks,
            block_size=config.block_size,
            vocab_size=model_config.vocab_size,
            max_model_len=min(config.max_model_len or 1 << 62, model_config.max_position_embeddings),
            executor_seed=config.seed,
        )
        log.info(
            "executor.ready",
            model=str(self.loaded.directory),
            device=str(self.device),
            dtype=str(self.dtype).removeprefix("torch."),
            backend=self.backend.name,
            device_blocks=num_device_blocks,
            host_blocks=num_host_blocks,
        )

    def _backend_name(self, model_config: LlamaConfig) -> str:
        """config.attention_backend; on CUDA, `auto` is what measured correct and fastest here."""
        if self.config.attention_backend != "auto" or self.device.type != "cuda":
            return self.config.attention_backend
        shape = HeadShape(
            model_config.num_attention_heads,
            model_config.num_key_value_heads,
            model_config.head_dim,
            self.config.block_size,
        )
        return select_backend(self.device, self.dtype, shape, cache_dir())[0]

    def claim_thread(self) -> None:
        """Apply the compute-thread setting to the calling thread (numba's is per thread); the
        constructor claims the thread that builds the engine, a server claims its engine thread."""
        if self.config.num_threads is not None:
            set_compute_threads(self.config.num_threads)

    def describe(self) -> pb.DescribeResponse:
        c = self.loaded.config
        model = pb.ModelInfo(
            name=self.config.model,
            model_type=c.model_type,
            num_layers=c.num_hidden_layers,
            hidden_size=c.hidden_size,
            num_attention_heads=c.num_attention_heads,
            num_key_value_heads=c.num_key_value_heads,
            head_dim=c.head_dim,
            vocab_size=c.vocab_size,
            max_model_len=self.limits.max_model_len,
            bos_token_id=c.bos_token_id,
            eos_token_ids=list(c.eos_token_ids),
            num_parameters=sum(p.numel() for p in self.loaded.model.parameters()),
        )
        return pb.DescribeResponse(
            model=model,
            dtype=str(self.dtype).removeprefix("torch."),
            device=str(self.device),
            attention_backend=self.backend.name,
            block_size_tokens=self.config.block_size,
            num_device_blocks=self.pools.num_device_blocks,
            num_host_blocks=self.pools.num_host_blocks,
            kv_bytes_per_block=self.kv_shape.bytes_per_block,
            tokenizer_json=self.loaded.tokenizer_json,
            chat_template=self.loaded.chat_template,
            chat_template_tokens=self.loaded.chat_template_tokens,
            version=__version__,
            wire_version=WIRE_VERSION,
        )

    def reset(self) -> int:
        """Forget every request; returns how many there were."""
        count = len(self.requests)
        self.requests.clear()
        self._last_step_end_s = None
        return count

    def step(self, plan: pb.StepPlan) -> pb.StepResult:
        """Carry out `plan`. An invalid plan is refused (result.error) with nothing applied."""
        began = time.perf_counter()
        idle_s = 0.0 if self._last_step_end_s is None else began - self._last_step_end_s
        try:
            result = self._step(plan, began)
        finally:
            self._last_step_end_s = time.perf_counter()
        result.idle_s = idle_s
        return result

    def _step(self, plan: pb.StepPlan, began: float) -> pb.StepResult:
        try:
            validated = validate_plan(plan, self.requests, self.limits)
        except PlanRejected as rejection:
            log.warning("plan.refused", step_id=plan.step_id, code=rejection.code, reason=rejection.message)
            return pb.StepResult(
                step_id=plan.step_id,
                error=pb.PlanError(code=rejection.code, message=rejection.message),
            )
        self._apply_bookkeeping(validated)
        self.swap.start(validated.swap_out, validated.swap_in)
        result = pb.StepResult(step_id=plan.step_id, num_batched_tokens=validated.num_tokens)
        forward_began = time.perf_counter()
        self._forward(validated, result.sampled)
        result.forward_s = time.perf_counter() - forward_began
        swap_times = self.swap.finish()
        result.swap_out_s, result.swap_in_s = swap_times.swap_out_s, swap_times.swap_in_s
        result.step_s = time.perf_counter() - began
        return result

    def _apply_bookkeeping(self, plan: ValidatedPlan) -> None:
        for request_id in plan.forget_ids:
            del self.requests[request_id]
        for request_id, sampling in plan.new_requests.items():
            self.requests[request_id] = RequestState(sampling, block_table=[])
        for request_id, table in plan.block_tables.items():
            self.requests[request_id].block_table = table

    def _forward(self, plan: ValidatedPlan, sampled: pb.SampledTokens) -> None:
        """Run the plan's work and fill `sampled` (the result's own field, filled in place) with its
        sampled tokens, column by column."""
        src, dst = (torch.from_numpy(ids).to(self.device) for ids in plan.device_copies)
        device_pool = self.pools.device

        def before_layer(layer: int) -> None:
            # Copy-on-write of shared prefix blocks: after the layer's swaps, before it computes.
            self.swap.wait_for_layer(layer)
            if len(src):
                copy_blocks(device_pool[layer], device_pool[layer], src, dst)

        work = plan.work
        if not work.num_seqs:
            for layer in range(self.kv_shape.num_layers):
                before_layer(layer)
            return
        batch = build_batch(work, self.config.block_size, self.device)
        meta = self.backend.prepare(batch.layout)
        logits = self.loaded.model(
            batch.input_ids,
            batch.positions,
            device_pool,
            meta,
            self.backend,
            batch.logit_indices,
            before_layer,
        )
        rows = batch.sampling_rows
        request_ids = [work.request_ids[row] for row in rows]
        states = [self.requests[rid] for rid in request_ids]
        context_lens = work.context_lens[rows].tolist()
        draws = sample(logits, [state.sampling for state in states], context_lens)
        token_ids = [draw.token_id for draw in draws]
        for state, token_id in zip(states, token_ids, strict=True):
            state.last_sampled = token_id
        sampled.request_ids.extend(request_ids)
        sampled.token_ids.extend(token_ids)
        sampled.logprobs.extend([draw.logprob for draw in draws])
        with_logits = work.return_logits[rows]
        if with_logits.any():
            sampled.has_logits.extend(with_logits.tolist())
            sampled.logits = pack_f32(logits[torch.from_numpy(with_logits).to(logits.device)].cpu().numpy())
