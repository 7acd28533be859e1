"""First start of an executor on a fresh machine: building the built-in model in an empty cache,
loading it, measuring its cost-model profile, and reading that profile back from the cache.

    python -m benchmarks.first_start_bench [--model default|tiny] [--device cpu|cuda]

Prints wall and process CPU seconds of each phase (CPU seconds are the less disturbed figure on a
shared machine), and the forward tokens the profile measurement computed. The cache is a
temporary directory, so nothing is reused from earlier runs.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from typing import TypeVar

from executor_svc.config import ExecutorConfig
from executor_svc.engine import Engine
from executor_svc.loading import BUILTIN_MODELS
from executor_svc.profiler import get_profile
from infercept.v1 import executor_pb2 as pb
from svc_common.wire import unpack_u32

T = TypeVar("T")


def timed(label: str, fn: Callable[[], T]) -> T:
    began_s, began_cpu_s = time.perf_counter(), time.process_time()
    value = fn()
    wall_s, cpu_s = time.perf_counter() - began_s, time.process_time() - began_cpu_s
    print(f"{label:<34} {wall_s:8.2f} s wall {cpu_s:8.2f} s CPU", flush=True)
    return value


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="default", choices=sorted(BUILTIN_MODELS))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        os.environ["INFERCEPT_CACHE_DIR"] = cache
        print(f"# first start of the {args.model!r} model on {args.device} (empty cache {cache})")
        timed("build the model into the cache", BUILTIN_MODELS[args.model])
        config = ExecutorConfig(model=args.model, device=args.device)
        engine = timed("load it (Engine)", lambda: Engine(config))
        num_tokens = [0]
        step = engine.step

        def counting_step(plan: pb.StepPlan) -> pb.StepResult:
            num_tokens[0] += len(unpack_u32(plan.work.token_ids))
            return step(plan)

        engine.step = counting_step  # type: ignore[method-assign]
        profile = timed("measure the profile", lambda: get_profile(engine))
        timed("read the profile from the cache", lambda: get_profile(engine))
        num_prefill = sum(1 for s in profile.forward_samples if s.context_tokens == 0)
        print(
            f"profile: {num_tokens[0]} forward tokens computed, {num_prefill} prefill points up to "
            f"{max(s.num_batched_tokens for s in profile.forward_samples)} tokens, "
            f"saturation {profile.saturation_tokens:.0f} tokens"
        )


if __name__ == "__main__":
    main()
