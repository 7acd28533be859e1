"""Security and metrics benchmark: what the RPC-status interceptor (metrics), bearer-token
authentication and TLS add to a call, on an in-process server and client (one event loop).

    python -m benchmarks.security_bench [--calls N] [--messages N]

Prints, per configuration, the median over rounds of the mean round trip of a unary call and the rate of a server stream
of small messages (the shape of a Session's token deltas), and the ratio to plain gRPC.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
from prometheus_client import CollectorRegistry

from infercept.channel import open_aio_channel
from infercept.tls import channel_credentials
from svc_common import serving
from svc_common.metrics_endpoint import RpcStatusInterceptor, rpc_counter
from svc_common.tls import ServerTls
from tests.certs import make_pki

TOKEN = "bench-token"


def _handlers(num_messages: int) -> grpc.GenericRpcHandler:
    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    async def stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        for _ in range(num_messages):
            yield b"x" * 8

    return grpc.method_handlers_generic_handler(
        "bench.B",
        {
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
        },
    )


async def measure(
    name: str, security: serving.ServerSecurity, metrics: bool, ca: bytes | None, args: argparse.Namespace
) -> tuple[str, float, float]:
    interceptors: list[grpc.aio.ServerInterceptor] = []
    if metrics:
        interceptors.append(RpcStatusInterceptor(rpc_counter(CollectorRegistry())))
    interceptors += security.interceptors()
    server, _ = serving.new_server("bench.B", interceptors)
    server.add_generic_rpc_handlers((_handlers(args.messages),))
    port = serving.bind(server, "127.0.0.1:0", security.credentials())
    await server.start()
    token = TOKEN if security.tokens else None
    credentials = channel_credentials(ca) if ca else None
    async with open_aio_channel(f"127.0.0.1:{port}", (), credentials, token) as channel:
        echo = channel.unary_unary("/bench.B/Echo", None, None)  # raw bytes both ways
        stream = channel.unary_stream("/bench.B/Stream", None, None)
        await echo(b"warm-up")
        start = time.perf_counter()
        for _ in range(args.calls):
            await echo(b"ping")
        unary_us = (time.perf_counter() - start) / args.calls * 1e6
        start = time.perf_counter()
        count = 0
        async for _ in stream(b"go"):
            count += 1
        rate = count / (time.perf_counter() - start)
    await server.stop(None)
    return name, unary_us, rate


async def main_async(args: argparse.Namespace) -> None:
    pki = make_pki(Path(tempfile.mkdtemp(prefix="infercept-bench-pki-")))
    tls = ServerTls(pki.server_cert, pki.server_key)
    configurations = [
        ("plain gRPC", serving.ServerSecurity(), False, None),
        ("+ metrics interceptor", serving.ServerSecurity(), True, None),
        ("+ token auth", serving.ServerSecurity(tokens={TOKEN: "bench"}), True, None),
        ("+ TLS", serving.ServerSecurity(tls=tls, tokens={TOKEN: "bench"}), True, pki.ca_pem),
    ]
    # The machine is shared and gRPC warms up: rounds alternate the configurations, medians count.
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name, *_ in configurations}
    for _ in range(args.rounds):
        for name, security, metrics, ca in configurations:
            _, unary_us, rate = await measure(name, security, metrics, ca, args)
            samples[name].append((unary_us, rate))
    rows = [
        (name, statistics.median(u for u, _ in runs), statistics.median(r for _, r in runs))
        for name, runs in samples.items()
    ]
    base_us, base_rate = rows[0][1], rows[0][2]
    print(f"{'configuration':<24} {'unary us':>10} {'x plain':>8} {'stream msg/s':>14} {'x plain':>8}")
    for name, unary_us, rate in rows:
        print(
            f"{name:<24} {unary_us:>10.1f} {unary_us / base_us:>8.2f} {rate:>14.0f} {rate / base_rate:>8.2f}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--calls", type=int, default=2000, help="unary calls per configuration")
    p.add_argument("--messages", type=int, default=20000, help="streamed messages per configuration")
    p.add_argument("--rounds", type=int, default=5, help="rounds over all configurations (medians)")
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
