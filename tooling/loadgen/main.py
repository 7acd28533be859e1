"""``infercept-loadgen``: drive a live deployment with an augmented-LLM workload and write the
paper's metrics as a results JSON (a RunRecord, tooling/run_record.py).

    infercept-loadgen --target 127.0.0.1:50051 --workload mixed --rate 2 --duration 600 \\
        --warmup 60 --seed 0 --out results.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from infercept.auth import read_token
from infercept.errors import InferceptError
from tooling.launcher import LaunchError
from tooling.loadgen.load_run import Target, run_load
from tooling.loadgen.report import DEFAULT_SLO_S_PER_TOKEN, print_sweep
from tooling.loadgen.sweep import sweep
from tooling.loadgen.workload_spec import WorkloadSpec, add_workload_flags, parse_rates, workload_from_flags
from tooling.stack_spec import StackSpec, add_stack_flags, stack_from_flags

AUTH_TOKEN_ENV = "INFERCEPT_AUTH_TOKEN"  # as the scheduler reads it
DEFAULT_WORKLOAD = WorkloadSpec(workload="mixed")
DEFAULT_STACK = StackSpec(model="tiny")  # where the load matters more than the words


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="infercept-loadgen",
        description="Poisson arrivals of augmented requests (synthetic scripts with real tool waits) "
        "against an InferCept server; prints a summary and writes the results JSON.",
    )
    p.add_argument("--target", default="127.0.0.1:50051", help="the server, HOST:PORT")
    p.add_argument("--ca", type=Path, help="PEM CA of the server's certificate: connect over TLS")
    p.add_argument(
        "--token-file", type=Path, help=f"the client token (first line; default: ${AUTH_TOKEN_ENV} if set)"
    )
    add_workload_flags(p, DEFAULT_WORKLOAD)
    p.add_argument("--out", type=Path, default=Path("results.json"), help="where the results JSON goes")
    p.add_argument("--policy-label", help="the results' policy (default: the server's policy)")
    sweep_flags = p.add_argument_group("sweep: several rates (and, with --launch, several policies)")
    sweep_flags.add_argument("--rates", help="comma-separated rates, requests/s (instead of --rate)")
    sweep_flags.add_argument(
        "--policies", help="comma-separated policies; needs --launch (a fresh stack each)"
    )
    sweep_flags.add_argument(
        "--launch", action="store_true", help="start a local executor + scheduler instead of --target"
    )
    sweep_flags.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run every (policy, rate) this many times, in rounds with the policies' order rotated; "
        "the table adds each one's mean and spread",
    )
    sweep_flags.add_argument(
        "--slo", type=float, default=DEFAULT_SLO_S_PER_TOKEN, help="SLO, mean normalized s/token"
    )
    sweep_flags.add_argument("--plot", type=Path, help="write the latency-against-rate plot (PNG) here")
    add_stack_flags(p.add_argument_group("--launch: the local stack"), DEFAULT_STACK)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    workload = workload_from_flags(args)
    try:
        workload.validate()
        target = Target(
            args.target,
            args.ca.read_bytes() if args.ca else None,
            read_token(args.token_file, AUTH_TOKEN_ENV),
        )
    except (ValueError, OSError) as error:
        print(f"infercept-loadgen: {error}", file=sys.stderr)
        return 2
    if args.repeats < 1:
        print(f"infercept-loadgen: --repeats must be at least 1, got {args.repeats}", file=sys.stderr)
        return 2
    if args.rates or args.policies or args.launch or args.repeats > 1:
        stack = stack_from_flags(args) if args.launch else None
        policies = [p for p in (args.policies or "").split(",") if p.strip()]
        rates = parse_rates(args.rates, workload.rate)
        try:
            records = sweep(
                workload,
                rates,
                target,
                stack=stack,
                policies=policies,
                policy_label=args.policy_label,
                repeats=args.repeats,
            )
        except (InferceptError, ValueError, OSError, LaunchError) as error:
            print(f"infercept-loadgen: {error}", file=sys.stderr)
            return 1
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps([record.to_json() for record in records], indent=2) + "\n")
        print_sweep(records, args.out, args.slo, args.plot)
        return 0
    try:
        record = asyncio.run(run_load(target, workload, args.policy_label))
    except (InferceptError, ValueError, OSError) as error:
        print(f"infercept-loadgen: {error}", file=sys.stderr)
        return 1
    args.out.write_text(json.dumps(record.to_json(), indent=2) + "\n")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
