"""``python -m svc_common.healthcheck HOST:PORT``: a container health probe for the InferCept services.

Asks the standard gRPC health service (``grpc.health.v1.Health/Check``) at HOST:PORT about one
service (``--service``, default ``""``: the server as a whole) and exits 0 when the answer is
SERVING, 1 otherwise: NOT_SERVING, an unknown service, nothing listening, no answer within
``--timeout`` seconds, or a malformed command line (exit status 2 is reserved by Docker's
HEALTHCHECK). It prints one line saying what it saw, which Docker keeps in the container's health
log (``docker inspect``). It needs nothing but the project's own dependencies, so it works in any
image the project is installed in.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from infercept.channel import open_channel

DEFAULT_TIMEOUT_S = 3.0


@dataclasses.dataclass(frozen=True)
class Probe:
    """What one health check saw."""

    answered: bool  # the health service replied within the timeout, with any status
    serving: bool  # ... and the status was SERVING
    seen: str  # the status's name, or the RPC failure as "CODE: details"


def probe(
    target: str,
    service: str = "",
    timeout_s: float = DEFAULT_TIMEOUT_S,
    root_certificates: bytes | None = None,
) -> Probe:
    """Ask the health service at `target` ("host:port") about `service`. Over TLS when
    `root_certificates` (PEM of the server's CA) are given. Never raises for an RPC failure: an
    unreachable or silent server has simply not answered."""
    credentials = grpc.ssl_channel_credentials(root_certificates) if root_certificates else None
    with open_channel(target, (), credentials) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as error:
            code = error.code() if isinstance(error, grpc.Call) else None
            name = code.name if code is not None else "RPC_ERROR"
            details = error.details() if isinstance(error, grpc.Call) else str(error)
            return Probe(answered=False, serving=False, seen=f"{name}: {details}")
    status_name = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return Probe(
        answered=True, serving=response.status == health_pb2.HealthCheckResponse.SERVING, seen=status_name
    )


def check(
    target: str,
    service: str = "",
    timeout_s: float = DEFAULT_TIMEOUT_S,
    root_certificates: bytes | None = None,
) -> tuple[bool, str]:
    """(serving, what was seen): `probe` as the container probe reports it."""
    seen = probe(target, service, timeout_s, root_certificates)
    return seen.serving, seen.seen


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m svc_common.healthcheck",
        description="Exit 0 when the gRPC health service at TARGET reports SERVING, else 1.",
    )
    p.add_argument("target", help="host:port of the gRPC server, e.g. 127.0.0.1:50061")
    p.add_argument("--service", default="", help="service name to ask about ('' = the whole server)")
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds to wait for the answer (default {DEFAULT_TIMEOUT_S:g})",
    )
    p.add_argument("--ca", help="PEM CA of the server's certificate: probe over TLS (default: plaintext)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the probe; return the process exit status (0 serving, 1 anything else)."""
    try:
        args = parse_args(argv)
    except SystemExit as exit_:  # --help exits 0; a usage error must read as "unhealthy", not 2
        return 0 if exit_.code in (0, None) else 1
    if args.timeout <= 0:
        print(f"--timeout must be positive, not {args.timeout}", file=sys.stderr)
        return 1
    try:
        root_certificates = Path(args.ca).read_bytes() if args.ca else None
    except OSError as error:
        print(f"cannot read --ca: {error}", file=sys.stderr)
        return 1
    serving, seen = check(args.target, args.service, args.timeout, root_certificates)
    print(f"{args.target} {args.service!r}: {seen}")
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main())
