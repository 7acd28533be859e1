"""``infercept-scheduler``: the public Generation service, driving one executor."""

from __future__ import annotations

import argparse
import asyncio
import sys

from infercept.logs import configure_logging
from scheduler_svc.config import SchedulerConfig
from scheduler_svc.estimators import ESTIMATORS
from scheduler_svc.executor_client import ExecutorUnavailable
from scheduler_svc.policies import POLICIES, TECHNIQUES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    policies = "; ".join(f"{name}: {cls.description}" for name, cls in POLICIES.items())
    p = argparse.ArgumentParser(
        prog="infercept-scheduler",
        description="The InferCept scheduler: serves the public Generation API, decides per paused "
        "request whether to preserve, discard or swap its KV context, and drives one executor.",
        epilog=f"Policies — {policies}",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--listen", default="127.0.0.1:50051", help="host:port to serve on (port 0: any free port)"
    )
    p.add_argument("--executor", default="127.0.0.1:50061", help="host:port of the executor")
    p.add_argument(
        "--policy", default="infercept", choices=sorted(POLICIES), help="what happens to paused contexts"
    )
    p.add_argument(
        "--estimator",
        default="history",
        choices=sorted(ESTIMATORS),
        help="infercept: how a paused call's remaining time is estimated (history falls back to the "
        "client's hint, then to the elapsed time, until a tool has enough finished calls)",
    )
    p.add_argument(
        "--disable",
        default="",
        metavar="TECHNIQUE[,...]",
        help=f"infercept: switch techniques off for ablations, from {', '.join(TECHNIQUES)}",
    )
    p.add_argument("--max-batched-tokens", type=int, default=512, help="token budget of one iteration")
    p.add_argument("--max-num-seqs", type=int, default=256, help="most requests computed in one iteration")
    p.add_argument(
        "--max-live-requests", type=int, default=4096, help="more are refused with RESOURCE_EXHAUSTED"
    )
    p.add_argument(
        "--executor-timeout", type=float, default=120.0, help="seconds to wait for the executor at start"
    )
    p.add_argument(
        "--check-invariants", action="store_true", help="assert the block invariant every iteration"
    )
    p.add_argument(
        "--iteration-log", help="write each iteration's statistics to this file as JSON lines (benchmarks)"
    )
    p.add_argument("--port-file", help="write the bound port to this file once serving")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-json", action="store_true", help="log JSON lines instead of the console format")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level, json=args.log_json)
    try:
        config = SchedulerConfig(
            policy=args.policy,
            estimator=args.estimator,
            disabled_techniques=tuple(t for t in args.disable.split(",") if t),
            max_batched_tokens=args.max_batched_tokens,
            max_num_seqs=args.max_num_seqs,
            max_live_requests=args.max_live_requests,
            check_invariants=args.check_invariants,
        )
    except ValueError as error:
        print(f"infercept-scheduler: {error}", file=sys.stderr)
        return 2
    if POLICIES[config.policy].simulator_only:
        print(
            f"infercept-scheduler: policy {config.policy!r} runs in the simulator only (infercept-sim): "
            "a real executor cannot restore a paused context for free",
            file=sys.stderr,
        )
        return 2
    from scheduler_svc.server import serve

    try:
        import uvloop

        uvloop.install()
    except ImportError:  # uvloop is optional off Linux/macOS
        pass
    try:
        asyncio.run(
            serve(
                config, args.listen, args.executor, args.executor_timeout, args.port_file, args.iteration_log
            )
        )
    except ExecutorUnavailable as error:
        print(f"infercept-scheduler: {error}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
