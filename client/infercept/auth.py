"""Bearer tokens on the client side: token files and the interceptors that present a token.

A server started with tokens (svc_common/auth.py) answers every RPC except the health service with
UNAUTHENTICATED unless the call carries the metadata ``authorization: Bearer <token>`` with one of
its tokens.

Token file: one token per line, optionally preceded by a name (``NAME TOKEN``); blank lines and
lines starting with ``#`` are skipped. The name is the caller's identity (the owner of the
requests it creates); a token without a name gets ``token-<line number>``.

Clients attach the header with an interceptor on their channel (`BearerToken`), so no call site
has to remember it.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

METADATA_KEY = "authorization"
SCHEME = "Bearer "


class TokenFileError(ValueError):
    """The token file is missing, unreadable or holds no token."""


def load_tokens(path: str | Path | None, env_var: str | None = None) -> dict[str, str]:
    """Token -> identity, from the file at `path`, else from the environment variable `env_var`
    (one token, identity "env"); {} (authentication off) when neither is set.
    Raises TokenFileError for an unreadable or empty file."""
    if path:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise TokenFileError(f"cannot read the token file {path}: {error}") from error
        tokens = _parse_token_lines(lines)
        if not tokens:
            raise TokenFileError(f"the token file {path} holds no token")
        return tokens
    value = os.environ.get(env_var, "").strip() if env_var else ""
    return {value: "env"} if value else {}


def _parse_token_lines(lines: Sequence[str]) -> dict[str, str]:
    tokens: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) > 2:
            raise TokenFileError(f"token file line {number}: expected TOKEN or NAME TOKEN")
        name, token = (fields[0], fields[1]) if len(fields) == 2 else (f"token-{number}", fields[0])
        tokens[token] = name
    return tokens


def read_token(path: str | Path | None, env_var: str | None = None) -> str | None:
    """The one token a client presents: the first token of the file at `path`, else the value of
    `env_var`; None when neither is set."""
    tokens = load_tokens(path, env_var)
    return next(iter(tokens), None)


_CallDetails = collections.namedtuple(
    "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
)


class _SyncCallDetails(_CallDetails, grpc.ClientCallDetails):
    pass


def _with_token(metadata: Any, header: tuple[str, str]) -> list[tuple[str, Any]]:
    return [*(metadata or ()), header]


class BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """A blocking channel's interceptor adding ``authorization: Bearer <token>`` to every call:
    ``grpc.intercept_channel(channel, BearerToken(token))``."""

    def __init__(self, token: str) -> None:
        self.header = (METADATA_KEY, SCHEME + token)

    def _details(self, details: Any) -> _SyncCallDetails:
        return _SyncCallDetails(
            details.method,
            details.timeout,
            _with_token(details.metadata, self.header),
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return continuation(self._details(client_call_details), request_iterator)


def aio_token_interceptors(token: str | None) -> list[Any]:  # grpc-stubs lack the aio interceptors
    """Interceptors for a grpc.aio channel that add the bearer token to every call ([] if None)."""
    if token is None:
        return []
    header = (METADATA_KEY, SCHEME + token)
    return [
        _AioUnaryUnary(header),
        _AioUnaryStream(header),
        _AioStreamUnary(header),
        _AioStreamStream(header),
    ]


class _AioTokenBase:
    def __init__(self, header: tuple[str, str]) -> None:
        self.header = header

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            grpc.aio.Metadata(*_with_token(details.metadata, self.header)),
            details.credentials,
            details.wait_for_ready,
        )


class _AioUnaryUnary(_AioTokenBase, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)


class _AioUnaryStream(_AioTokenBase, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)


class _AioStreamUnary(_AioTokenBase, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(self._details(client_call_details), request_iterator)


class _AioStreamStream(_AioTokenBase, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(self._details(client_call_details), request_iterator)
