"""``infercept-scheduler``: the public Generation service, driving one executor."""

from __future__ import annotations

import argparse
import asyncio
import sys

from infercept.auth import TokenFileError, load_tokens, read_token
from infercept.tls import ClientTls, TlsConfigError
from scheduler_svc.config import LinkConfig, SchedulerConfig
from scheduler_svc.estimators import ESTIMATORS
from scheduler_svc.executor_client import ExecutorUnavailable
from scheduler_svc.executor_link import ExecutorLink
from scheduler_svc.policies import LAZY_SWAP_TECHNIQUES, POLICIES, TECHNIQUES
from scheduler_svc.stats_log import DEFAULT_INTERVAL_S as DEFAULT_STATS_INTERVAL_S
from svc_common.logs import configure_logging
from svc_common.metrics_endpoint import DEFAULT_METRICS_HOST, MetricsEndpoint
from svc_common.serving import ServerSecurity
from svc_common.tls import ServerTls

AUTH_TOKEN_ENV = "INFERCEPT_AUTH_TOKEN"  # one client token, when there is no token file
EXECUTOR_TOKEN_ENV = "INFERCEPT_EXECUTOR_TOKEN"  # the executor's internal token


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
        help=f"infercept: switch techniques off for ablations, from {', '.join(TECHNIQUES)}; "
        f"lazy-swap: from {', '.join(LAZY_SWAP_TECHNIQUES)}",
    )
    p.add_argument(
        "--prefix-caching",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="cache freed KV blocks by content and share common prefixes (default: on for vllm-apc "
        "and continuum, off for the others)",
    )
    p.add_argument("--max-batched-tokens", type=int, default=512, help="token budget of one iteration")
    p.add_argument("--max-num-seqs", type=int, default=256, help="most requests computed in one iteration")
    p.add_argument(
        "--max-live-requests", type=int, default=4096, help="more are refused with RESOURCE_EXHAUSTED"
    )
    p.add_argument(
        "--max-queue-wait-s",
        type=float,
        default=30.0,
        help="refuse new requests (RESOURCE_EXHAUSTED with a retry-after-ms hint) when the queue ahead "
        "is expected to take longer than this, from its tokens and the measured rate; 0: never",
    )
    p.add_argument(
        "--pause-timeout-s",
        type=float,
        default=300.0,
        help="end a paused request with DEADLINE_EXCEEDED (freeing its blocks) when its tool result has "
        "not come after this many seconds; 0: never",
    )
    p.add_argument(
        "--executor-timeout", type=float, default=120.0, help="seconds to wait for the executor at start"
    )
    link = LinkConfig()
    p.add_argument(
        "--step-timeout",
        type=float,
        default=link.step_timeout_s,
        help="seconds one executor step may take before the executor counts as hung and is reconnected",
    )
    p.add_argument(
        "--reset-timeout",
        type=float,
        default=link.reset_timeout_s,
        help="seconds an executor Reset or health probe may take",
    )
    p.add_argument(
        "--outage-timeout",
        type=float,
        default=link.outage_timeout_s,
        help="seconds computing requests wait for a lost executor before they end with UNAVAILABLE",
    )
    p.add_argument(
        "--probe-interval",
        type=float,
        default=link.probe_interval_s,
        help="seconds between health probes of the executor while the scheduler is idle",
    )
    p.add_argument(
        "--check-invariants", action="store_true", help="assert the block invariant every iteration"
    )
    p.add_argument(
        "--no-plan-ahead",
        dest="plan_ahead",
        action="store_false",
        help="plan each iteration only once the last one's result is in (default: decodes are planned "
        "while the executor computes, where their plan cannot depend on its result)",
    )
    p.add_argument(
        "--iteration-log", help="write each iteration's statistics to this file as JSON lines (benchmarks)"
    )
    security = p.add_argument_group("security (default: plaintext, no token; keep --listen on loopback)")
    security.add_argument("--tls-cert", help="PEM certificate chain: serve the public API over TLS")
    security.add_argument("--tls-key", help="PEM private key of --tls-cert")
    security.add_argument(
        "--auth-token-file",
        help=f"client tokens (one per line, 'TOKEN' or 'NAME TOKEN'; NAME owns its requests) sent as "
        f"'authorization: Bearer TOKEN'; without it, ${AUTH_TOKEN_ENV} if set, else no token is required",
    )
    security.add_argument("--executor-ca", help="PEM CA of the executor's certificate: reach it over TLS")
    security.add_argument("--executor-client-cert", help="PEM certificate presented to the executor (mTLS)")
    security.add_argument("--executor-client-key", help="PEM private key of --executor-client-cert")
    security.add_argument(
        "--executor-token-file",
        help=f"the executor's token (first line); without it, ${EXECUTOR_TOKEN_ENV} if set, else none",
    )
    observability = p.add_argument_group("observability")
    observability.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help="serve Prometheus metrics at http://HOST:PORT/metrics (0: off)",
    )
    observability.add_argument(
        "--metrics-host", default=DEFAULT_METRICS_HOST, help="address the metrics endpoint listens on"
    )
    observability.add_argument(
        "--stats-interval-s",
        type=float,
        default=DEFAULT_STATS_INTERVAL_S,
        help="log one 'stats' line every this many seconds (0: never)",
    )
    p.add_argument("--port-file", help="write the bound port to this file once serving")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-json", action="store_true", help="log JSON lines instead of the console format")
    return p.parse_args(argv)


def security_from_args(args: argparse.Namespace) -> tuple[ServerSecurity, ExecutorLink]:
    """The public port's TLS and tokens, and the executor link's TLS and token, from the flags;
    TlsConfigError or TokenFileError if they are unusable."""
    public = ServerSecurity(
        tls=ServerTls.from_flags(args.tls_cert, args.tls_key),
        tokens=load_tokens(args.auth_token_file, AUTH_TOKEN_ENV),
    )
    link = ExecutorLink(
        tls=ClientTls.from_flags(args.executor_ca, args.executor_client_cert, args.executor_client_key),
        token=read_token(args.executor_token_file, EXECUTOR_TOKEN_ENV),
    )
    return public, link


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
            max_queue_wait_s=args.max_queue_wait_s,
            pause_timeout_s=args.pause_timeout_s,
            check_invariants=args.check_invariants,
            enable_prefix_caching=args.prefix_caching,
            plan_ahead=args.plan_ahead,
        )
        security, executor_link = security_from_args(args)
        metrics_endpoint = MetricsEndpoint(args.metrics_host, args.metrics_port)
        if args.stats_interval_s < 0:
            raise ValueError(f"--stats-interval-s must be >= 0, not {args.stats_interval_s}")
        link = LinkConfig(
            step_timeout_s=args.step_timeout,
            reset_timeout_s=args.reset_timeout,
            outage_timeout_s=args.outage_timeout,
            probe_interval_s=args.probe_interval,
        )
    except (ValueError, TlsConfigError, TokenFileError) as error:
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
        return asyncio.run(
            serve(
                config,
                args.listen,
                args.executor,
                args.executor_timeout,
                args.port_file,
                args.iteration_log,
                link,
                security=security,
                executor_link=executor_link,
                metrics_endpoint=metrics_endpoint,
                stats_interval_s=args.stats_interval_s,
            )
        )
    except (ExecutorUnavailable, OSError, TlsConfigError) as error:
        print(f"infercept-scheduler: {error}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
