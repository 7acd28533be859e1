"""Our two-process stack against `transformers` `generate` on the same CPU, side by side in one run.

Two workloads, N concurrent greedy requests of M generated tokens each (same-length random
prompts, ids sent directly so no tokenizer differs):

* plain: no tool calls. transformers: one static batch of all N prompts, `generate` M tokens.
* tools: every request pauses `--calls` times, evenly through its M tokens, for `--wait-s` seconds
  and gets `--returned-tokens` tokens back. Ours: ScriptedCall interceptions (the scheduler
  decides what happens to the paused context). transformers, the natural baseline: generate
  until the call, wait, append the returned tokens, generate again with the whole context
  re-prefilled, all N in one static batch (they pause together).

Each side runs `--rounds` times in rotation (the load of a shared machine hits both alike); the
best round of each is reported with completed requests/s, generated tokens/s and ours/theirs.

    python -m benchmarks.peer_bench [--model default|tiny|HF_DIR] [--requests 16] [--tokens 64]
        [--calls 2] [--wait-s 0.5] [--policy infercept] [--rounds 2] [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import multiprocessing
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from executor_svc.checkpoint import read_config
from executor_svc.loading import resolve_model_dir
from infercept import AsyncClient, SamplingParams, ScriptedCall
from svc_common.logs import configure_logging
from tooling.launcher import launch

if TYPE_CHECKING:  # transformers loads in the worker process only
    from transformers import GenerationMixin

WORKER_TIMEOUT_S = 1800.0


@dataclasses.dataclass(frozen=True)
class Workload:
    prompts: list[list[int]]  # (N, prompt_tokens), equal lengths: a static batch needs no padding
    num_tokens: int  # generated tokens per request
    num_calls: int  # tool calls per request, evenly spaced
    wait_s: float  # each call's duration
    returned: list[int]  # what each call returns

    @property
    def segments(self) -> list[int]:
        """Tokens generated before each call, then after the last one (sums to num_tokens)."""
        cuts = np.linspace(0, self.num_tokens, self.num_calls + 2).round().astype(int)
        return np.diff(cuts).tolist()

    @property
    def total_tokens(self) -> int:
        return len(self.prompts) * self.num_tokens


def run_ours_blocking(address: str, workload: Workload) -> float:
    """run_ours in a fresh event loop."""
    return asyncio.run(run_ours(address, workload))


async def run_ours(address: str, workload: Workload) -> float:
    """Seconds until every request of `workload` finished on our stack."""
    segments = workload.segments
    script = [
        ScriptedCall(
            after_tokens=n, tool="tool", wait_s=workload.wait_s, returned_token_ids=workload.returned
        )
        for n in segments[:-1]
    ]
    sampling = SamplingParams(max_tokens=workload.num_tokens, temperature=0.0, ignore_eos=True)
    async with AsyncClient(address) as client:
        began = time.perf_counter()
        results = await asyncio.gather(
            *(client.generate(prompt_token_ids=p, sampling=sampling, script=script) for p in workload.prompts)
        )
        seconds = time.perf_counter() - began
    for result in results:
        generated = len(result.output_token_ids) - workload.num_calls * len(workload.returned)
        assert generated == workload.num_tokens, f"{result.request_id}: {generated} tokens generated"
    return seconds


def run_transformers(model: GenerationMixin, workload: Workload) -> float:
    """Seconds for `workload` as static-batch `generate` calls, re-prefilling after each call."""
    ids = torch.tensor(workload.prompts)
    returned = torch.tensor([workload.returned] * len(workload.prompts), dtype=ids.dtype)
    began = time.perf_counter()
    for index, num_tokens in enumerate(workload.segments):
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=num_tokens,
            min_new_tokens=num_tokens,
            do_sample=False,
            pad_token_id=0,
        )
        assert out.shape[1] == ids.shape[1] + num_tokens
        if index < workload.num_calls:
            time.sleep(workload.wait_s)  # the tool call: the static batch waits for it
            out = torch.cat((out, returned), dim=1)
        ids = out
    return time.perf_counter() - began


class TransformersProcess:
    """transformers in a process of its own (spawned, never touching gRPC), like a user's script:
    measured in this benchmark's process, beside the gRPC client's threads, it ran several times
    slower with two compute threads on a 2-core machine."""

    def __init__(self, model_dir: Path, num_threads: int | None) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(
            target=_transformers_worker, args=(child_conn, model_dir, num_threads)
        )
        self._process.start()

    def run(self, workload: Workload) -> float:
        self._conn.send(workload)
        if not self._conn.poll(WORKER_TIMEOUT_S):
            raise TimeoutError(f"transformers took over {WORKER_TIMEOUT_S} s")
        seconds: float = self._conn.recv()
        return seconds

    def close(self) -> None:
        self._conn.send(None)
        self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.kill()


def _transformers_worker(conn: Connection, model_dir: Path, num_threads: int | None) -> None:
    from transformers import AutoModelForCausalLM

    if num_threads:
        torch.set_num_threads(num_threads)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    while (workload := conn.recv()) is not None:
        conn.send(run_transformers(model, workload))


def best_in_rotation(runs: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(rounds):
        for name, run in runs.items():
            best[name] = min(best[name], run())
    return best


def report(name: str, workload: Workload, best_s: dict[str, float]) -> list[str]:
    n = len(workload.prompts)
    lines = [
        f"\n## {name}: {n} requests x {workload.num_tokens} tokens, {workload.num_calls} calls of {workload.wait_s} s"
    ]
    lines.append(f"{'':<14} {'seconds':>8} {'requests/s':>11} {'tokens/s':>9}")
    for side, seconds in best_s.items():
        lines.append(
            f"{side:<14} {seconds:>8.2f} {n / seconds:>11.2f} {workload.total_tokens / seconds:>9.1f}"
        )
    lines.append(f"ours/transformers throughput: {best_s['transformers'] / best_s['ours']:.2f}x")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        default="default",
        help="'default' (SmolLM2-135M-Instruct), 'tiny' (random) or a HF directory",
    )
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64, help="generated tokens per request")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--calls", type=int, default=2, help="tool calls per request (tools workload)")
    parser.add_argument("--wait-s", type=float, default=0.5, help="duration of each call")
    parser.add_argument("--returned-tokens", type=int, default=8)
    parser.add_argument("--policy", default="infercept", help="our scheduler's policy")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, help="compute threads of both sides (default: torch's)")
    parser.add_argument(
        "--executor-arg", action="append", default=[], help="extra executor flag (repeatable)"
    )
    args = parser.parse_args()
    configure_logging("warning")
    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = resolve_model_dir(args.model)
    vocab_size = read_config(model_dir).vocab_size
    rng = np.random.default_rng(0)
    prompts = rng.integers(3, vocab_size, (args.requests, args.prompt_tokens)).tolist()
    returned = rng.integers(3, vocab_size, args.returned_tokens).tolist()
    workloads = {
        "plain": Workload(prompts, args.tokens, 0, 0.0, returned),
        "tools": Workload(prompts, args.tokens, args.calls, args.wait_s, returned),
    }
    executor_args = ["--model", str(model_dir), "--device", "cpu", *args.executor_arg]
    if args.threads:
        executor_args += ["--threads", str(args.threads)]
    scheduler_args = ["--policy", args.policy]
    print(
        f"# peers on this CPU: our stack ({args.policy}) vs transformers generate (static batch), "
        f"{model_dir}, torch {torch.__version__}, {args.threads or torch.get_num_threads()} threads, "
        f"best of {args.rounds}; transformers in a process of its own"
    )
    theirs = TransformersProcess(model_dir, args.threads)
    try:
        with (
            tempfile.TemporaryDirectory() as logs,
            launch(executor_args, scheduler_args, log_dir=Path(logs)) as stack,
        ):
            for name, workload in workloads.items():
                runs: dict[str, Callable[[], float]] = {
                    "ours": functools.partial(run_ours_blocking, stack.scheduler_address, workload),
                    "transformers": functools.partial(theirs.run, workload),
                }
                print("\n".join(report(name, workload, best_in_rotation(runs, args.rounds))), flush=True)
    finally:
        theirs.close()


if __name__ == "__main__":
    main()
