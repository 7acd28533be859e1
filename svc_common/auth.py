"""Bearer-token authentication on the server side, for both services.

A server started with tokens (a token file, or one token in an environment variable: the file
format and its reading are the client library's, `infercept.auth.load_tokens`) answers every RPC
except the health service with UNAUTHENTICATED unless the call carries the metadata
``authorization: Bearer <token>`` with one of its tokens. Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc
import grpc.aio

from infercept.auth import METADATA_KEY, SCHEME

# Health must answer without a token: container probes and supervisors have none.
OPEN_SERVICE_PREFIXES = ("/grpc.health.v1.Health/",)
ANONYMOUS = ""  # the identity of every caller of a server without tokens


class Authenticator:
    """Who a call's metadata says the caller is, given the server's tokens."""

    def __init__(self, tokens: dict[str, str]) -> None:
        """tokens: token -> identity; empty means authentication is off (everyone is ANONYMOUS)."""
        self._tokens = [(token.encode(), identity) for token, identity in tokens.items()]

    @property
    def is_enabled(self) -> bool:
        return bool(self._tokens)

    def identify(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
        """The caller's identity, or None if authentication is on and no valid token was sent."""
        if not self._tokens:
            return ANONYMOUS
        presented = _bearer(metadata)
        if presented is None:
            return None
        found = None
        for token, identity in self._tokens:
            # Every token is compared (in constant time), so the answer's timing says nothing
            # about which token, or how much of one, matched.
            if hmac.compare_digest(token, presented):
                found = identity
        return found


def _bearer(metadata: Iterable[tuple[str, str | bytes]] | None) -> bytes | None:
    for key, value in metadata or ():
        if key == METADATA_KEY:
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            if text.startswith(SCHEME):
                return text[len(SCHEME) :].strip().encode()
    return None


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses every RPC but health with UNAUTHENTICATED unless it carries a valid bearer token."""

    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method or ""
        if handler is None or method.startswith(OPEN_SERVICE_PREFIXES):
            return handler
        if self._authenticator.identify(handler_call_details.invocation_metadata) is not None:
            return handler
        return _refusing_handler(handler)


def _refusing_handler(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that ends the call with UNAUTHENTICATED."""
    message = "a valid token is required: send metadata 'authorization: Bearer <token>'"

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    serializer = handler.response_serializer
    deserializer = handler.request_deserializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse, deserializer, serializer)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse, deserializer, serializer)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse, deserializer, serializer)
    return grpc.unary_unary_rpc_method_handler(refuse, deserializer, serializer)


def caller_identity(authenticator: Authenticator, context: grpc.aio.ServicerContext) -> str:
    """The identity of an RPC's caller (the interceptor has already refused invalid tokens)."""
    identity = authenticator.identify(context.invocation_metadata())
    return ANONYMOUS if identity is None else identity
