"""What the two services' Prometheus endpoints share: the HTTP server (loopback by default) and
a gRPC server interceptor counting finished RPCs by method and status code.

    infercept-scheduler --metrics-port 9090 ...   # http://127.0.0.1:9090/metrics
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
from prometheus_client import CollectorRegistry, Counter, start_http_server

DEFAULT_METRICS_HOST = "127.0.0.1"


@dataclasses.dataclass(frozen=True)
class MetricsEndpoint:
    """Where /metrics is served over HTTP; port 0: not served."""

    host: str = DEFAULT_METRICS_HOST
    port: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--metrics-port must be in 0..65535, not {self.port}")

    def start(self, registry: CollectorRegistry) -> Callable[[], None] | None:
        """Serve `registry` on a daemon thread; returns a function that stops it (None if off).
        Raises OSError if the port cannot be bound."""
        if self.port == 0:
            return None
        httpd, thread = start_http_server(self.port, self.host, registry)

        def stop() -> None:
            httpd.shutdown()
            httpd.server_close()
            thread.join(timeout=5.0)

        return stop


def rpc_counter(registry: CollectorRegistry) -> Counter:
    return Counter(
        "infercept_rpcs",
        "Finished RPCs by method and gRPC status code (refusals: RESOURCE_EXHAUSTED, "
        "UNAUTHENTICATED, INVALID_ARGUMENT, ...; CANCELLED: the client went away)",
        ["method", "code"],
        registry=registry,
    )


class RpcStatusInterceptor(grpc.aio.ServerInterceptor):
    """Counts every finished RPC (health included) by method and status code. Put it first, so
    that it also counts the calls a later interceptor (authentication) refuses."""

    def __init__(self, counter: Counter) -> None:
        self._counter = counter

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method or ""
        return _counting(handler, lambda code: self._counter.labels(method, code.name).inc())


def _final_code(context: grpc.aio.ServicerContext, error: BaseException | None) -> grpc.StatusCode:
    if isinstance(error, (asyncio.CancelledError, GeneratorExit)):  # the client went away
        return grpc.StatusCode.CANCELLED
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    return grpc.StatusCode.UNKNOWN if error is not None else grpc.StatusCode.OK


def _counting(
    handler: grpc.RpcMethodHandler, count: Callable[[grpc.StatusCode], None]
) -> grpc.RpcMethodHandler:
    """`handler` with its behaviour wrapped so that the RPC's final status code is counted."""
    if handler.response_streaming:
        # Any: grpc-stubs type the behaviours as the sync API's; an aio server's are coroutines.
        behavior: Any = handler.stream_stream if handler.request_streaming else handler.unary_stream

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            error: BaseException | None = None
            try:
                responses = behavior(request, context)
                if inspect.isasyncgen(responses):
                    async for response in responses:
                        yield response
                else:  # a coroutine that writes with context.write()
                    await responses
            except BaseException as raised:
                error = raised
                raise
            finally:
                count(_final_code(context, error))

        make = (
            grpc.stream_stream_rpc_method_handler
            if handler.request_streaming
            else grpc.unary_stream_rpc_method_handler
        )
        return make(streaming, handler.request_deserializer, handler.response_serializer)

    unary_behavior: Any = handler.stream_unary if handler.request_streaming else handler.unary_unary

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        error: BaseException | None = None
        try:
            return await unary_behavior(request, context)
        except BaseException as raised:
            error = raised
            raise
        finally:
            count(_final_code(context, error))

    make_unary = (
        grpc.stream_unary_rpc_method_handler
        if handler.request_streaming
        else grpc.unary_unary_rpc_method_handler
    )
    return make_unary(unary, handler.request_deserializer, handler.response_serializer)
