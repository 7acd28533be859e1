"""Executor benchmark: decode step time, prefill throughput, swap throughput, and the cost of
paging (our paged forward against a dense torch forward of the same batch), for the default model
and a larger random config. Everything is measured side by side in one run.

Decode contenders (each attention backend's whole engine step, and the dense forward) run in
rotation, one call each per round, and the best round of each is reported: on a shared machine
the load then hits every contender alike, and the best of N is the least disturbed.

    python -m benchmarks.executor_bench [--device cpu|cuda] [--repeats N] [--models tiny,default,large]
        [--backends numba,torch]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F

from executor_svc.attention import BACKENDS, AttentionBackend, create_backend
from executor_svc.config import ExecutorConfig
from executor_svc.engine import Engine
from executor_svc.model import DecoderLayer, LlamaForCausalLM, apply_rotary
from executor_svc.model_config import LlamaConfig
from executor_svc.random_model import write_random_model
from executor_svc.threads import set_compute_threads
from infercept.v1 import executor_pb2 as pb
from svc_common.step_wire import TableUpdate, Work, pack_table_updates, pack_work

LARGE_CONFIG = LlamaConfig(
    vocab_size=4096, hidden_size=512, intermediate_size=1408, num_hidden_layers=8,
    num_attention_heads=8, num_key_value_heads=4, head_dim=64, max_position_embeddings=4096,
)  # fmt: skip
CONTEXT_TOKENS = 512
DECODE_BATCHES = (1, 8, 32, 64)
PREFILL_TOKENS = 1024
SWAP_BLOCKS = 64
BLOCK_SIZE = 16


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def best_in_rotation(
    runs: dict[str, Callable[[], object]], repeats: int, device: torch.device, clock: Callable[[], float]
) -> dict[str, float]:
    """Best seconds of each run(), called in rotation `repeats` times after one warm-up each."""
    for run in runs.values():
        run()
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            began = clock()
            run()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best[name] = min(best[name], clock() - began)
    return best


def timed(run: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median seconds of run() after a warm-up."""
    run()
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


def fill_plan(batch: int, context: int, vocab_size: int) -> pb.StepPlan:
    """Requests 0..batch-1, each with a table of consecutive blocks for `context` + 1 tokens,
    computing only the token at position context - 1 (see Bench.fill)."""
    blocks_each = -(-(context + 1) // BLOCK_SIZE)
    tokens = np.random.default_rng(0).integers(0, vocab_size, batch).tolist()
    return pb.StepPlan(
        new_requests=[pb.NewRequest(request_id=i) for i in range(batch)],
        block_table_updates=pack_table_updates(
            TableUpdate(i, 0, range(i * blocks_each, (i + 1) * blocks_each)) for i in range(batch)
        ),
        work=pack_work(Work(i, context - 1, [tokens[i]], sample=True) for i in range(batch)),
    )


def decode_plan(batch: int, context: int) -> pb.StepPlan:
    """Requests 0..batch-1 each decode their last sampled token at position `context`."""
    work = [Work(i, context, use_last_sampled=True, sample=True) for i in range(batch)]
    return pb.StepPlan(work=pack_work(work))


class Bench:
    """Drives one engine with hand-made plans over borrowed request ids."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._step_id = 0

    def step(self, plan: pb.StepPlan) -> pb.StepResult:
        self._step_id += 1
        plan.step_id = self._step_id
        result = self.engine.step(plan)
        assert not result.HasField("error"), result.error.message
        return result

    def fill(self, batch: int, context: int) -> None:
        """Register `batch` requests with `context` tokens of context each, in consecutive blocks.

        Only each context's last token is computed; the positions before it keep whatever the
        pool holds (random values, see bench_model): a decode step reads them all the same, and
        prefilling 64 x 512 tokens would cost minutes on a small CPU.
        """
        self.engine.reset()
        self.step(fill_plan(batch, context, self.engine.limits.vocab_size))

    def decode(self, batch: int, context: int, backend: AttentionBackend) -> None:
        """One decode step of every filled request, its attention computed by `backend`."""
        self.engine.backend = backend  # the engine uses one backend per step; swapping between is safe
        self.step(decode_plan(batch, context))

    def prefill(self, num_tokens: int) -> None:
        self.engine.reset()
        plan = pb.StepPlan(
            new_requests=[pb.NewRequest(request_id=0)],
            block_table_updates=pack_table_updates([TableUpdate(0, 0, range(-(-num_tokens // BLOCK_SIZE)))]),
            work=pack_work([Work(0, 0, (np.arange(num_tokens) % 200).tolist(), sample=True)]),
        )
        self.step(plan)


class DenseDecoder:
    """The same weights decoding against contiguous per-request KV tensors: no paging, no gather."""

    def __init__(self, model: LlamaForCausalLM, batch: int, context: int, device: torch.device) -> None:
        c = model.config
        dtype = model.lm_head.weight.dtype
        self.model, self.context = model, context
        shape = (c.num_hidden_layers, batch, c.num_key_value_heads, context + 1, c.head_dim)
        self.keys = torch.randn(shape, dtype=dtype, device=device)
        self.values = torch.randn(shape, dtype=dtype, device=device)
        self.input_ids = torch.zeros(batch, dtype=torch.long, device=device)
        self.positions = torch.full((batch,), context, dtype=torch.long, device=device)

    @torch.inference_mode()
    def step(self) -> torch.Tensor:
        m = self.model
        h = m.model.embed_tokens(self.input_ids)
        cos, sin = m.rotary(self.positions, h.dtype)
        # ModuleList items are typed as plain Modules; these are the model's DecoderLayers.
        for index, layer in enumerate(cast("list[DecoderLayer]", m.model.layers)):
            attn = layer.self_attn
            x = layer.input_layernorm(h)
            batch = x.shape[0]
            q = apply_rotary(attn.q_proj(x).view(batch, attn.num_heads, attn.head_dim), cos, sin)
            k = apply_rotary(attn.k_proj(x).view(batch, attn.num_kv_heads, attn.head_dim), cos, sin)
            v = attn.v_proj(x).view(batch, attn.num_kv_heads, attn.head_dim)
            self.keys[index, :, :, self.context] = k
            self.values[index, :, :, self.context] = v
            out = F.scaled_dot_product_attention(
                q.unsqueeze(2), self.keys[index], self.values[index], enable_gqa=True
            ).squeeze(2)
            h = h + attn.o_proj(out.reshape(batch, -1))
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        return m.lm_head(m.model.norm(h)).argmax(-1)


def bench_model(
    name: str, model: str, device: str, repeats: int, backends: list[str], clock: Callable[[], float]
) -> list[str]:
    blocks_needed = max(DECODE_BATCHES) * -(-(CONTEXT_TOKENS + 1) // BLOCK_SIZE)
    engine = Engine(
        ExecutorConfig(
            model=model, device=device, block_size=BLOCK_SIZE, attention_backend=backends[0],
            num_device_blocks=max(blocks_needed, PREFILL_TOKENS // BLOCK_SIZE + 1), num_host_blocks=SWAP_BLOCKS,
        )
    )  # fmt: skip
    engine.pools.device.normal_()  # stands in for prefilled context (see Bench.fill)
    bench, dev = Bench(engine), engine.device
    # The first backend is the engine's own: for `auto`, what an executor picks here (on CUDA,
    # measured by the selection), which create_backend alone would not measure.
    attention = {backend: create_backend(backend, dev, engine.dtype) for backend in backends[1:]}
    attention[backends[0]] = engine.backend
    params = sum(p.numel() for p in engine.loaded.model.parameters()) / 1e6
    picked = f" (auto: {engine.backend.name})" if backends[0] == "auto" else ""
    lines = [
        f"\n## {name}: {params:.1f}M parameters, {engine.dtype}, {dev}, backends {', '.join(backends)}{picked}"
    ]
    lines.append(
        f"{'batch':>6} {'context':>8} "
        + "".join(f"{backend + ' ms':>11} {backend + '/dense':>13} " for backend in backends)
        + f"{'dense ms':>9} {'tok/s':>8}"
    )
    for batch in DECODE_BATCHES:
        bench.fill(batch, CONTEXT_TOKENS)
        dense = DenseDecoder(engine.loaded.model, batch, CONTEXT_TOKENS, dev)
        # Each decode recomputes position CONTEXT_TOKENS: the same work every repeat.
        runs: dict[str, Callable[[], object]] = {
            backend: functools.partial(bench.decode, batch, CONTEXT_TOKENS, attention[backend]) for backend in backends
        }  # fmt: skip
        runs["dense"] = dense.step
        best_s = best_in_rotation(runs, repeats, dev, clock)
        lines.append(
            f"{batch:>6} {CONTEXT_TOKENS:>8} "
            + "".join(
                f"{best_s[backend] * 1e3:>11.2f} {best_s[backend] / best_s['dense']:>13.2f} "
                for backend in backends
            )
            + f"{best_s['dense'] * 1e3:>9.2f} {batch / best_s[backends[0]]:>8.0f}"
        )
    engine.backend = attention[backends[0]]
    prefill_s = timed(lambda: bench.prefill(PREFILL_TOKENS), repeats, dev)
    lines.append(
        f"prefill: {PREFILL_TOKENS} tokens in {prefill_s * 1e3:.1f} ms = {PREFILL_TOKENS / prefill_s:,.0f} tokens/s"
    )
    ids = np.arange(SWAP_BLOCKS, dtype=np.int64)
    none = (ids[:0], ids[:0])
    for way, out_map, in_map in (
        ("out (device->host)", (ids, ids), none),
        ("in (host->device)", none, (ids, ids)),
    ):

        def swap(
            out_map: tuple[np.ndarray, np.ndarray] = out_map, in_map: tuple[np.ndarray, np.ndarray] = in_map
        ) -> None:
            engine.swap.start(out_map, in_map)
            engine.swap.finish()

        seconds = timed(swap, repeats, dev)
        mib_s = SWAP_BLOCKS * engine.kv_shape.bytes_per_block / seconds / 2**20
        lines.append(
            f"swap {way}: {seconds / SWAP_BLOCKS * 1e6:.1f} us/block "
            f"({engine.kv_shape.bytes_per_block / 1024:.0f} KiB/block, {mib_s:,.0f} MiB/s, {SWAP_BLOCKS} blocks per call)"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--models", default="tiny,large", help="comma list of: tiny, default, large")
    parser.add_argument(
        "--backends",
        default=",".join(b for b in ("numba", "torch") if b in BACKENDS),
        help="attention backends to compare, comma-separated; the first also runs prefill and swaps "
        "(auto first: the backend an executor picks, named in the model's heading)",
    )
    parser.add_argument("--threads", type=int, help="intra-op threads for torch and numba (default: torch's)")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="decode timing: wall seconds, or the process's CPU seconds (steadier on a busy machine; "
        "with --threads 1 it is the work itself)",
    )
    args = parser.parse_args()
    if args.threads:
        set_compute_threads(args.threads)
    print(
        f"# executor benchmark (torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"decode: best of {args.repeats} by the {args.clock} clock)"
    )
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.models.split(","):
            model = name
            if name == "large":
                model = str(Path(scratch) / "large")
                write_random_model(Path(model), LARGE_CONFIG, seed=0)
            backends = args.backends.split(",")
            lines = bench_model(name, model, args.device, args.repeats, backends, CLOCKS[args.clock])
            print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
