"""The one exception the client library raises, and its translation from gRPC statuses."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc

# Codes raised by the client itself; every other code is a gRPC status name from the server
# (or from the channel: UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED).
TOOL_FAILED = "TOOL_FAILED"  # a Tool's fn raised or returned something that is not a tool result
UNKNOWN_TOOL = "UNKNOWN_TOOL"  # the server intercepted as a tool this request did not declare
PROTOCOL_ERROR = "PROTOCOL_ERROR"  # the server broke the Session protocol
CANCELLED = "CANCELLED"  # the stream or its client was closed before Finished (gRPC's name)


class InferceptError(Exception):
    """A request failed. `code` is a gRPC status name ("INVALID_ARGUMENT", "NOT_FOUND", ...) or
    one of the client's own codes above; `message` says what was wrong."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> InferceptError:
        """The status of a failed call: its code's name and its details."""
        # Every RpcError gRPC raises is also a Call with code() and details(); be safe anyway.
        code = error.code() if callable(getattr(error, "code", None)) else None
        details = error.details() if callable(getattr(error, "details", None)) else None
        return cls(code.name if code is not None else "UNKNOWN", details or str(error))


@contextmanager
def translated_rpc_errors() -> Iterator[None]:
    """Raise every grpc.RpcError inside the block as an InferceptError."""
    try:
        yield
    except grpc.RpcError as error:
        raise InferceptError.from_rpc_error(error) from error
