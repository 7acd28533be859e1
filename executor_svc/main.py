"""``infercept-executor``: serve a model's forward passes and KV cache to one scheduler."""

from __future__ import annotations

import argparse
import asyncio
import sys

import structlog

from executor_svc.checkpoint import CheckpointError
from executor_svc.config import DTYPES, ExecutorConfig
from executor_svc.model_config import ModelConfigError
from executor_svc.threads import serving_threads
from infercept.auth import TokenFileError, load_tokens
from infercept.tls import TlsConfigError
from svc_common.logs import configure_logging
from svc_common.metrics_endpoint import DEFAULT_METRICS_HOST, MetricsEndpoint
from svc_common.serving import ServerSecurity
from svc_common.tls import ServerTls

log = structlog.get_logger(__name__)

# The internal token, shared by the executor and its one scheduler (infercept serve sets it).
EXECUTOR_TOKEN_ENV = "INFERCEPT_EXECUTOR_TOKEN"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="infercept-executor",
        description="The InferCept executor: model weights, paged KV cache (device + host), swaps, "
        "forward passes and sampling, driven one StepPlan per iteration by the scheduler.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--listen", default="127.0.0.1:50061", help="host:port to serve on (port 0: any free port)"
    )
    p.add_argument(
        "--model",
        default="default",
        help="'default' (SmolLM2-135M-Instruct, converted on first use), 'tiny' (random weights) or a HF-format directory",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--dtype", default="auto", choices=["auto", *DTYPES], help="weights and KV dtype")
    p.add_argument("--block-size", type=int, default=16, help="tokens per KV block (a power of two)")
    blocks = p.add_mutually_exclusive_group()
    blocks.add_argument("--num-device-blocks", type=int, help="device KV blocks (default: 1024 on CPU)")
    blocks.add_argument(
        "--gpu-memory-fraction",
        type=float,
        default=0.9,
        help="on CUDA, size the device pool to this share of memory",
    )
    p.add_argument(
        "--num-host-blocks",
        type=int,
        help="host KV blocks for swapped-out context (default: as many as device blocks, at most 16 GiB)",
    )
    p.add_argument("--max-model-len", type=int, help="longest context served (default: the model's)")
    p.add_argument("--attention-backend", default="auto", help="auto | torch | triton")
    p.add_argument(
        "--threads",
        type=int,
        help="compute threads for the forward (torch intra-op and the numba attention kernel); "
        "default: one per core but one, which is left to the gRPC loop",
    )
    p.add_argument("--seed", type=int, default=0, help="seeds the sampling of requests that bring no seed")
    p.add_argument(
        "--profile", action="store_true", help="print the cost-model profile (measured or cached) and exit"
    )
    p.add_argument("--refresh-profile", action="store_true", help="with --profile: measure even if cached")
    security = p.add_argument_group("security (default: plaintext, no token; keep --listen on loopback)")
    security.add_argument("--tls-cert", help="PEM certificate chain: serve TLS (with --tls-key)")
    security.add_argument("--tls-key", help="PEM private key of --tls-cert")
    security.add_argument(
        "--tls-client-ca", help="PEM CA: require the scheduler to present a certificate it signed (mTLS)"
    )
    security.add_argument(
        "--auth-token-file",
        help=f"tokens (one per line, 'TOKEN' or 'NAME TOKEN') the scheduler must send as "
        f"'authorization: Bearer TOKEN'; without it, ${EXECUTOR_TOKEN_ENV} if set, else no token is required",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help="serve Prometheus metrics at http://HOST:PORT/metrics (0: off)",
    )
    p.add_argument(
        "--metrics-host", default=DEFAULT_METRICS_HOST, help="address the metrics endpoint listens on"
    )
    p.add_argument(
        "--lease-timeout",
        type=float,
        default=30.0,
        help="seconds a scheduler keeps the executor after its last Reset while it has no Run stream "
        "open (another scheduler is refused meanwhile; a broken stream releases it at once)",
    )
    p.add_argument("--port-file", help="write the bound port to this file once serving")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-json", action="store_true", help="log JSON lines instead of the console format")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> ExecutorConfig:
    return ExecutorConfig(
        model=args.model,
        device=args.device,
        dtype=args.dtype,
        block_size=args.block_size,
        num_device_blocks=args.num_device_blocks,
        gpu_memory_fraction=args.gpu_memory_fraction,
        num_host_blocks=args.num_host_blocks,
        seed=args.seed,
        attention_backend=args.attention_backend,
        max_model_len=args.max_model_len,
        num_threads=args.threads if args.threads is not None else serving_threads(),
    )


def security_from_args(args: argparse.Namespace) -> ServerSecurity:
    """TLS and tokens from the flags; TlsConfigError or TokenFileError if they are unusable."""
    return ServerSecurity(
        tls=ServerTls.from_flags(args.tls_cert, args.tls_key, args.tls_client_ca),
        tokens=load_tokens(args.auth_token_file, EXECUTOR_TOKEN_ENV),
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level, json=args.log_json)
    try:
        security = security_from_args(args)
        metrics_endpoint = MetricsEndpoint(args.metrics_host, args.metrics_port)
    except (TlsConfigError, TokenFileError, ValueError) as error:
        print(f"infercept-executor: {error}", file=sys.stderr)
        return 2
    # Imported here so that --help answers without loading torch.
    from executor_svc.engine import Engine

    try:
        engine = Engine(config_from_args(args))
    except (ValueError, OSError, CheckpointError, ModelConfigError) as error:
        print(f"infercept-executor: {error}", file=sys.stderr)
        return 2
    if args.profile:
        from executor_svc.profile_report import format_profile
        from executor_svc.profiler import get_profile

        print(format_profile(get_profile(engine, refresh=args.refresh_profile)))
        return 0
    from executor_svc.server import serve

    try:
        import uvloop

        uvloop.install()
    except ImportError:  # uvloop is optional off Linux/macOS
        pass
    try:
        asyncio.run(
            serve(engine, args.listen, args.port_file, security, metrics_endpoint, args.lease_timeout)
        )
    except (OSError, TlsConfigError) as error:
        print(f"infercept-executor: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
