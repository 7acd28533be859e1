"""Fault benchmark: how long each injected fault takes to be detected and recovered from, on a
real two-process stack (the default model on the CPU).

    python -m benchmarks.fault_bench [--repeats N]

Each repeat runs one greedy request of `--max-tokens` tokens cleanly, then again three times with
a fault injected a moment into its generation, and prints, in seconds:

- executor kill -9, restarted at once: kill -> scheduler health NOT_SERVING (detection),
  kill -> SERVING again (outage, including the executor's start-up), and the request's extra
  latency over the clean run;
- executor SIGSTOP (step timeout 2 s, outage timeout 2 s): stop -> the client's UNAVAILABLE;
- scheduler kill -9, restarted at once: the request's extra latency (the client resumes it).

Every faulted request must end with the clean run's tokens (or UNAVAILABLE for the SIGSTOP);
a mismatch is printed.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from infercept import NO_RESUME, Client, InferceptError, ResumePolicy, SamplingParams
from infercept.result import GenerateResult
from svc_common.healthcheck import check
from tooling.launcher import Service, start_service, stop_service, wait_serving

EXECUTOR_ARGS = ["--model", "tiny", "--device", "cpu", "--num-device-blocks", "256"]
LINK_ARGS = ["--probe-interval", "0.2", "--reset-timeout", "2"]
PROMPT = list(range(40, 80))
RESUME = ResumePolicy(max_attempts=40, initial_backoff_s=0.1, max_backoff_s=0.5)
START_TIMEOUT_S = 300.0


class Stack:
    def __init__(self, log_dir: Path, scheduler_args: list[str]) -> None:
        self.log_dir = log_dir
        self.scheduler_args = scheduler_args
        self.executor_address, self.scheduler_address = "127.0.0.1:0", "127.0.0.1:0"
        self.executor = self._start("executor", [])
        self.scheduler = self._start("scheduler", [])

    def _start(self, name: str, _: list[str]) -> Service:
        if name == "executor":
            service = start_service(name, "executor_svc", self.executor_address, EXECUTOR_ARGS, self.log_dir)
            port = wait_serving(service, self.log_dir, START_TIMEOUT_S)
            self.executor_address = f"127.0.0.1:{port}"
        else:
            args = ["--executor", self.executor_address, *LINK_ARGS, *self.scheduler_args]
            service = start_service(name, "scheduler_svc", self.scheduler_address, args, self.log_dir)
            port = wait_serving(service, self.log_dir, START_TIMEOUT_S)
            self.scheduler_address = f"127.0.0.1:{port}"
        return service

    def restart(self, name: str) -> None:
        setattr(self, name, self._start(name, []))

    def stop(self) -> None:
        for service in (self.scheduler, self.executor):
            if service.process.poll() is None:
                service.process.send_signal(signal.SIGCONT)  # a stopped one cannot stop
            stop_service(service)


def _until(condition: Callable[[], bool], timeout_s: float = 120.0) -> float:
    """Poll until `condition`; the time.monotonic() when it held."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.01)
    return time.monotonic()


def _generate(stack: Stack, max_tokens: int, resume: ResumePolicy, out: list[object]) -> None:
    sampling = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    with Client(stack.scheduler_address, resume=resume) as client:
        try:
            out.append(client.generate(prompt_token_ids=PROMPT, sampling=sampling, timeout_s=600))
        except InferceptError as error:
            out.append(error)


def _in_flight(stack: Stack, max_tokens: int, resume: ResumePolicy) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []
    thread = threading.Thread(target=_generate, args=(stack, max_tokens, resume, out))
    thread.start()
    time.sleep(1.0)  # a moment into the generation
    return thread, out


def _serving(stack: Stack) -> str:
    return check(stack.scheduler_address, timeout_s=2.0)[1]


def run_once(log_dir: Path, max_tokens: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    stack = Stack(log_dir, ["--outage-timeout", "60"])
    try:
        out: list[object] = []
        for _ in range(2):  # the first warms the stack up; the second is the baseline
            _generate(stack, max_tokens, NO_RESUME, out)
        clean = out[-1]
        assert isinstance(clean, GenerateResult), clean

        thread, out = _in_flight(stack, max_tokens, NO_RESUME)
        killed_s = time.monotonic()
        stack.executor.process.kill()
        stack.executor.process.wait()
        figures["executor kill: detected"] = _until(lambda: _serving(stack) == "NOT_SERVING") - killed_s
        stack.restart("executor")
        figures["executor kill: outage"] = _until(lambda: _serving(stack) == "SERVING") - killed_s
        thread.join()
        result = out[0]
        assert isinstance(result, GenerateResult), result
        _check(result, clean, "executor kill")
        figures["executor kill: extra latency"] = result.latency_s - clean.latency_s

        thread, out = _in_flight(stack, max_tokens, RESUME)
        stack.scheduler.process.kill()
        stack.scheduler.process.wait()
        stack.restart("scheduler")
        thread.join()
        result = out[0]
        assert isinstance(result, GenerateResult), result
        _check(result, clean, "scheduler kill")
        figures["scheduler kill: extra latency"] = result.latency_s - clean.latency_s
    finally:
        stack.stop()
    stack = Stack(log_dir, ["--step-timeout", "2", "--outage-timeout", "2"])
    try:
        thread, out = _in_flight(stack, max_tokens * 10, NO_RESUME)
        stopped_s = time.monotonic()
        os.kill(stack.executor.process.pid, signal.SIGSTOP)
        thread.join()
        figures["executor SIGSTOP: UNAVAILABLE after"] = time.monotonic() - stopped_s
        error = out[0]
        if not (isinstance(error, InferceptError) and error.code == "UNAVAILABLE"):
            print(f"  SIGSTOP: expected UNAVAILABLE, got {error!r}")
    finally:
        stack.stop()
    return figures


def _check(result: GenerateResult, clean: GenerateResult, what: str) -> None:
    if result.output_token_ids != clean.output_token_ids:
        print(f"  {what}: TOKENS DIFFER from the clean run")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=600)
    args = p.parse_args()
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    runs = []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="fault-bench-") as tmp:
            runs.append(run_once(Path(tmp), args.max_tokens))
        print(f"run {repeat + 1}: " + ", ".join(f"{k} {v:.2f}s" for k, v in runs[-1].items()), flush=True)
    print(f"{'figure':40} {'median s':>9} {'max s':>7}")
    for key in runs[0]:
        values = [run[key] for run in runs]
        print(f"{key:40} {statistics.median(values):9.2f} {max(values):7.2f}")


if __name__ == "__main__":
    main()
