"""``infercept``: run the service stack (``serve``) and the demo (``demo``)."""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import tempfile
import threading
from pathlib import Path

from infercept import demo
from infercept.launcher import LaunchError
from infercept.supervisor import Supervised, SupervisionConfig


def stack_args(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The executor and scheduler command lines for the stack flags of add_stack_flags."""
    executor = ["--model", args.model, "--device", args.device, "--block-size", str(args.block_size)]
    if args.num_device_blocks:
        executor += ["--num-device-blocks", str(args.num_device_blocks)]
    if args.num_host_blocks is not None:
        executor += ["--num-host-blocks", str(args.num_host_blocks)]
    scheduler = ["--policy", args.policy, "--max-batched-tokens", str(args.max_batched_tokens)]
    return executor + shlex.split(args.executor_args), scheduler + shlex.split(args.scheduler_args)


SIGNAL_POLL_S = 0.2  # how often `serve` looks for Ctrl-C or SIGTERM


def add_stack_flags(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument("--model", default="default", help="'default' or a Hugging Face-format directory")
    p.add_argument("--device", default="auto", help="executor device: auto | cpu | cuda")
    p.add_argument(
        "--policy", default="infercept", help="scheduling policy (infercept-scheduler --help lists them)"
    )
    p.add_argument("--block-size", type=int, default=16, help="tokens per KV block")
    p.add_argument("--num-device-blocks", type=int, help="device KV blocks (default: the executor's)")
    p.add_argument("--num-host-blocks", type=int, help="host KV blocks (default: the executor's)")
    p.add_argument("--max-batched-tokens", type=int, default=512, help="token budget per iteration")
    p.add_argument("--executor-args", default="", help="more flags for infercept-executor, one string")
    p.add_argument("--scheduler-args", default="", help="more flags for infercept-scheduler, one string")
    p.add_argument(
        "--log-dir", type=Path, help="where the two services write their logs (default: a temp dir)"
    )


def serve(args: argparse.Namespace) -> int:
    """Start both services and keep them alive (supervisor.py) until Ctrl-C or SIGTERM."""
    executor_args, scheduler_args = stack_args(args)
    host = args.listen.rsplit(":", 1)[0]
    logs = Path(args.log_dir or tempfile.mkdtemp(prefix="infercept-"))
    logs.mkdir(parents=True, exist_ok=True)
    config = SupervisionConfig(
        check_interval_s=args.health_interval,
        probe_timeout_s=args.health_timeout,
        max_missed_checks=args.max_missed_checks,
        max_backoff_s=args.max_restart_backoff,
    )
    stop = threading.Event()
    # Both signals stop the stack, SIGINT too when the parent started us with it ignored (a
    # command run in the background of a script), which would otherwise leave it running.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    # The executor's port is chosen once (args.executor_port, or any free one at the first
    # start): a restarted executor comes back where the scheduler looks for it.
    executor = Supervised("executor", f"{host}:{args.executor_port}", executor_args, logs, config)
    services = [executor]
    try:
        executor.start()
        scheduler = Supervised(
            "scheduler", args.listen, ["--executor", executor.address, *scheduler_args], logs, config
        )
        services.append(scheduler)
        scheduler.start()
        print(f"InferCept serving on {scheduler.address} (executor {executor.address}, logs {logs})")
        print("Ctrl-C stops both services.", flush=True)
        # Wake up now and then: to supervise, and because a signal that lands on one of gRPC's
        # threads only sets a flag, which the main thread acts on when it next runs.
        while not stop.wait(timeout=SIGNAL_POLL_S):
            for service in services:
                if line := service.poll():
                    print(line, flush=True)
    except KeyboardInterrupt:
        pass
    except LaunchError as error:
        print(f"infercept serve: {error}", file=sys.stderr)
        return 1
    finally:
        for service in reversed(services):  # the scheduler first, then the executor
            service.stop()
    print("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="infercept", description="InferCept service: serving for augmented LLMs"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser(
        "serve",
        help="start an executor and a scheduler, keep both alive (a dead or hung one is restarted on its port), stop both on Ctrl-C",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    serve_parser.add_argument("--listen", default="127.0.0.1:50051", help="the scheduler's public host:port")
    serve_parser.add_argument(
        "--executor-port", type=int, default=0, help="the executor's port (0: a free one, kept on restarts)"
    )
    supervision = SupervisionConfig()
    serve_parser.add_argument(
        "--health-interval",
        type=float,
        default=supervision.check_interval_s,
        help="seconds between liveness probes of each service",
    )
    serve_parser.add_argument(
        "--health-timeout", type=float, default=supervision.probe_timeout_s, help="seconds a probe may take"
    )
    serve_parser.add_argument(
        "--max-missed-checks",
        type=int,
        default=supervision.max_missed_checks,
        help="consecutive unanswered probes after which a service is killed as hung and restarted",
    )
    serve_parser.add_argument(
        "--max-restart-backoff",
        type=float,
        default=supervision.max_backoff_s,
        help="the longest wait, seconds, before restarting a service that keeps dying",
    )
    add_stack_flags(serve_parser)
    serve_parser.set_defaults(run=serve)
    demo_parser = commands.add_parser(
        "demo",
        help="start the stack, run augmented requests with real Python tools, print the transcript, stop",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    demo.add_flags(demo_parser)
    demo_parser.set_defaults(run=demo.run)
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
