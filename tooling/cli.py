"""``infercept``: run the service stack (``serve``) and the demo (``demo``)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import secrets
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from tooling import demo
from tooling.launcher import EXECUTOR_TOKEN_ENV, LaunchError
from tooling.stack_spec import StackSpec, add_stack_flags, stack_from_flags
from tooling.supervisor import Supervised, SupervisionConfig

SIGNAL_POLL_S = 0.2  # how often `serve` looks for Ctrl-C or SIGTERM


def add_security_flags(p: argparse.ArgumentParser) -> None:
    """`serve`'s flags for the public port (passed on to infercept-scheduler)."""
    group = p.add_argument_group("security and metrics of the public port (default: plaintext, no token)")
    group.add_argument("--tls-cert", help="PEM certificate chain: serve the public API over TLS")
    group.add_argument("--tls-key", help="PEM private key of --tls-cert")
    group.add_argument("--tls-ca", help="PEM CA that signed --tls-cert (the start-up health probe trusts it)")
    group.add_argument(
        "--auth-token-file",
        help="client tokens, one per line ('TOKEN' or 'NAME TOKEN'): required on every call",
    )
    group.add_argument(
        "--metrics-port", type=int, default=0, help="the scheduler's Prometheus metrics on 127.0.0.1 (0: off)"
    )


@dataclasses.dataclass(frozen=True)
class PublicPortSecurity:
    """`serve`'s TLS, token and metrics settings of the public port (add_security_flags)."""

    tls_cert: str = ""  # PEM certificate chain; "": plaintext
    tls_key: str = ""
    tls_ca: str = ""  # the CA that signed tls_cert: the start-up health probe trusts it
    auth_token_file: str = ""  # client tokens; "": no token required
    metrics_port: int = 0  # the scheduler's Prometheus metrics on 127.0.0.1; 0: off

    def scheduler_argv(self) -> list[str]:
        """The scheduler's flags. Raises ValueError for an incomplete TLS combination."""
        argv: list[str] = []
        if self.tls_cert or self.tls_key:
            if not (self.tls_cert and self.tls_key and self.tls_ca):
                raise ValueError("--tls-cert, --tls-key and --tls-ca go together")
            argv += ["--tls-cert", self.tls_cert, "--tls-key", self.tls_key]
        if self.auth_token_file:
            argv += ["--auth-token-file", self.auth_token_file]
        if self.metrics_port:
            argv += ["--metrics-port", str(self.metrics_port)]
        return argv

    def probe_root_certificates(self) -> bytes | None:
        """The CA the health probe trusts (None: plaintext). Raises OSError for an unreadable CA."""
        return Path(self.tls_ca).read_bytes() if self.tls_cert else None


def security_from_flags(args: argparse.Namespace) -> PublicPortSecurity:
    return PublicPortSecurity(
        tls_cert=args.tls_cert or "",
        tls_key=args.tls_key or "",
        tls_ca=args.tls_ca or "",
        auth_token_file=args.auth_token_file or "",
        metrics_port=args.metrics_port,
    )


@dataclasses.dataclass(frozen=True)
class ServeSpec:
    """What `infercept serve` runs."""

    stack: StackSpec
    security: PublicPortSecurity
    supervision: SupervisionConfig
    listen: str = "127.0.0.1:50051"  # the scheduler's public host:port
    executor_port: int = 0  # 0: a free one, kept on restarts
    gateway_listen: str = ""  # also start the HTTP gateway on this host:port; "": no gateway


def serve(spec: ServeSpec) -> int:
    """Start both services and keep them alive (supervisor.py) until Ctrl-C or SIGTERM."""
    stack, config = spec.stack, spec.supervision
    executor_args, scheduler_args = stack.executor_argv(), stack.scheduler_argv()
    try:
        secured_args = spec.security.scheduler_argv()
        root_certificates = spec.security.probe_root_certificates()
    except (ValueError, OSError) as error:
        print(f"infercept serve: {error}", file=sys.stderr)
        return 2
    scheduler_args += secured_args
    host = spec.listen.rsplit(":", 1)[0]
    logs = Path(stack.log_dir or tempfile.mkdtemp(prefix="infercept-"))
    logs.mkdir(parents=True, exist_ok=True)
    # One random internal token for this stack (kept across restarts): nothing else can drive
    # the executor.
    env = {EXECUTOR_TOKEN_ENV: os.environ.get(EXECUTOR_TOKEN_ENV) or secrets.token_urlsafe(32)}
    stop = threading.Event()
    # Both signals stop the stack, SIGINT too when the parent started us with it ignored (a
    # command run in the background of a script), which would otherwise leave it running.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    # The executor's port is chosen once (spec.executor_port, or any free one at the first
    # start): a restarted executor comes back where the scheduler looks for it.
    executor = Supervised("executor", f"{host}:{spec.executor_port}", executor_args, logs, config, env=env)
    services = [executor]
    try:
        executor.start()
        scheduler = Supervised(
            "scheduler",
            spec.listen,
            ["--executor", executor.address, *scheduler_args],
            logs,
            config,
            env=env,
            root_certificates=root_certificates,
        )
        services.append(scheduler)
        scheduler.start()
        with _gateway(spec, scheduler.address, logs) as gateway_url:
            print(f"InferCept serving on {scheduler.address} (executor {executor.address}, logs {logs})")
            if gateway_url:
                print(f"OpenAI-compatible gateway on {gateway_url}/v1")
            print("Ctrl-C stops every service.", flush=True)
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


@contextlib.contextmanager
def _gateway(spec: ServeSpec, scheduler_address: str, log_dir: Path) -> Iterator[str]:
    """The HTTP gateway as a third child when asked (`--gateway-listen`); yields its URL or "".
    It presents the first token of --auth-token-file and trusts --tls-ca, as the health probe."""
    if not spec.gateway_listen:
        yield ""
        return
    from gateway.process import run_gateway  # the gateway's package, only when asked for

    security = spec.security
    token_file = security.auth_token_file or None
    ca_path = security.tls_ca if security.tls_cert else None
    with run_gateway(
        spec.gateway_listen, scheduler_address, log_dir, token_file=token_file, ca_path=ca_path
    ) as url:
        yield url


def serve_from_flags(args: argparse.Namespace) -> ServeSpec:
    return ServeSpec(
        stack=stack_from_flags(args),
        security=security_from_flags(args),
        supervision=SupervisionConfig(
            check_interval_s=args.health_interval,
            probe_timeout_s=args.health_timeout,
            max_missed_checks=args.max_missed_checks,
            max_backoff_s=args.max_restart_backoff,
        ),
        listen=args.listen,
        executor_port=args.executor_port,
        gateway_listen=args.gateway_listen,
    )


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
        "--gateway-listen", default="", help="also start the OpenAI-compatible HTTP gateway on this host:port"
    )
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
    add_stack_flags(serve_parser, StackSpec())
    add_security_flags(serve_parser)
    serve_parser.set_defaults(run=lambda args: serve(serve_from_flags(args)))
    demo_parser = commands.add_parser(
        "demo",
        help="start the stack, run augmented requests with real Python tools, print the transcript, stop",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    demo.add_flags(demo_parser)
    demo_parser.set_defaults(run=lambda args: demo.run(args.policy, args.device))
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
