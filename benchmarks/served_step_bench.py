"""Served step against in-process step: the same decode plans run by an Engine in this process
and by a real executor process over the gRPC Run stream, side by side.

Columns: the executor's own step time (StepResult.step_s) in process and served, their ratio,
and the client's round trip (send plan, receive result) of the served step. A served/in-process
ratio near 1 means serving costs the forward nothing; the round trip minus the served step is
the transport.

    python -m benchmarks.served_step_bench [--model default] [--batches 1,8,32] [--steps 30]
        [--context 512] [--threads N] [--executor-arg=--attention-backend=torch ...]
"""

from __future__ import annotations

import argparse
import queue
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc

from benchmarks.executor_bench import BLOCK_SIZE, decode_plan, fill_plan
from executor_svc.config import ExecutorConfig
from executor_svc.engine import Engine
from executor_svc.threads import serving_threads
from infercept.v1 import executor_pb2 as pb
from infercept.v1 import executor_pb2_grpc
from svc_common.logs import configure_logging
from tooling.launcher import run_service

StepFn = Callable[[pb.StepPlan], pb.StepResult]


class RunStream:
    """One Run stream used as a blocking call: step(plan) sends a plan and waits for its result."""

    def __init__(self, stub: executor_pb2_grpc.ExecutorStub) -> None:
        self._plans: queue.Queue[pb.StepPlan | None] = queue.Queue()
        self._results: Iterator[pb.StepResult] = iter(stub.Run(iter(self._plans.get, None)))

    def step(self, plan: pb.StepPlan) -> pb.StepResult:
        self._plans.put(plan)
        result = next(self._results)
        assert not result.HasField("error"), result.error.message
        return result

    def close(self) -> None:
        self._plans.put(None)
        for _ in self._results:  # drain to the end of the stream
            pass


class Driver:
    """Numbered plans into one step function; remembers each result and its round trip."""

    def __init__(self, step: StepFn) -> None:
        self._step = step
        self._step_id = 0

    def run(self, plan: pb.StepPlan) -> tuple[pb.StepResult, float]:
        self._step_id += 1
        plan.step_id = self._step_id
        began = time.perf_counter()
        result = self._step(plan)
        return result, time.perf_counter() - began


def measure_side_by_side(
    drivers: dict[str, Driver], batch: int, context: int, vocab_size: int, steps: int
) -> dict[str, list[tuple[pb.StepResult, float]]]:
    """`steps` decode steps of `batch` requests on each driver, in rotation (so that a busy machine
    slows every side alike), after one warm-up each."""
    for driver in drivers.values():
        driver.run(fill_plan(batch, context, vocab_size))
        driver.run(decode_plan(batch, context))
    samples: dict[str, list[tuple[pb.StepResult, float]]] = {name: [] for name in drivers}
    for _ in range(steps):
        for name, driver in drivers.items():
            samples[name].append(driver.run(decode_plan(batch, context)))
    for driver in drivers.values():
        driver.run(pb.StepPlan(forget_request_ids=list(range(batch))))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default="tiny", help="'tiny', 'default' or a Hugging Face-format directory"
    )
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument(
        "--threads",
        type=int,
        help="compute threads, in process and served alike (default: the served executor's, cores - 1)",
    )
    parser.add_argument(
        "--executor-arg", action="append", default=[], help="extra infercept-executor flag (repeatable)"
    )
    args = parser.parse_args()
    configure_logging("warning")
    batches = [int(b) for b in args.batches.split(",")]
    num_threads = args.threads or serving_threads()
    num_blocks = max(batches) * -(-(args.context + 1) // BLOCK_SIZE)
    config = ExecutorConfig(
        model=args.model, device="cpu", block_size=BLOCK_SIZE, num_device_blocks=num_blocks, num_host_blocks=0,
        num_threads=num_threads,
    )  # fmt: skip
    engine = Engine(config)
    vocab_size = engine.limits.vocab_size
    executor_args = ["--model", args.model, "--device", "cpu", "--block-size", str(BLOCK_SIZE)]
    executor_args += [
        "--num-device-blocks",
        str(num_blocks),
        "--num-host-blocks",
        "0",
        "--threads",
        str(num_threads),
    ]
    executor_args += args.executor_arg
    print(
        f"# served step vs in-process step: {args.model}, decode at context {args.context}, {args.steps} steps each"
    )
    print(f"# executor flags: {' '.join(executor_args)}")
    print("# step ms: the executor's own StepResult.step_s, median (best); round trip: the client's")
    print(f"{'batch':>6} {'in-process':>17} {'served':>17} {'served/in-proc':>15} {'round trip':>11}")
    with (
        tempfile.TemporaryDirectory() as logs,
        run_service("executor", "127.0.0.1:0", executor_args, Path(logs)) as address,
        grpc.insecure_channel(address) as channel,
    ):
        stream = RunStream(executor_pb2_grpc.ExecutorStub(channel))
        drivers = {"local": Driver(engine.step), "served": Driver(stream.step)}
        for batch in batches:
            samples = measure_side_by_side(drivers, batch, args.context, vocab_size, args.steps)
            local = [r.step_s for r, _ in samples["local"]]
            served = [r.step_s for r, _ in samples["served"]]
            round_trip = statistics.median(wall for _, wall in samples["served"])
            ratio = statistics.median(served) / statistics.median(local)
            print(
                f"{batch:>6} {_ms(local):>17} {_ms(served):>17} {ratio:>15.2f} {round_trip * 1e3:>11.2f}",
                flush=True,
            )
        stream.close()


def _ms(seconds: list[float]) -> str:
    return f"{statistics.median(seconds) * 1e3:.2f} ({min(seconds) * 1e3:.2f})"


if __name__ == "__main__":
    main()
