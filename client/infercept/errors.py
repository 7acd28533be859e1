"""StatusError, the shape every (code, message) error of the project shares; InferceptError, the
one exception the client library raises, and its translation from gRPC statuses.

The scheduler refuses a request with its own StatusError (scheduler_svc.admission.RequestError),
which its service edge turns into the RPC's status; the client receives that status as an
InferceptError with the same code and message. The gateway maps a code to an HTTP status at its
own edge (gateway.errors).
"""

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


class StatusError(Exception):
    """A failure named by a status: `code` is a gRPC status code name ("INVALID_ARGUMENT",
    "NOT_FOUND", ...) or one of the client's own codes above; `message` says, for a person, what
    was wrong. Raised as one of its subclasses, each saying on which side it arose."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class InferceptError(StatusError):
    """A request failed, as the client sees it: the status the server (or the channel) ended the
    call with, or one of the client's own codes for what went wrong on its side."""

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> InferceptError:
        """The status of a failed call: its code's name and its details."""
        # Every RpcError gRPC raises is also a Call with code() and details(); be safe anyway.
        code = error.code() if callable(getattr(error, "code", None)) else None
        details = error.details() if callable(getattr(error, "details", None)) else None
        return cls(code.name if code is not None else "UNKNOWN", details or str(error))


def closed_error() -> InferceptError:
    """The error of a request whose stream or client was closed before Finished."""
    return InferceptError(CANCELLED, "the stream (or its client) was closed before the request finished")


@contextmanager
def translated_rpc_errors() -> Iterator[None]:
    """Raise every grpc.RpcError inside the block as an InferceptError."""
    try:
        yield
    except grpc.RpcError as error:
        raise InferceptError.from_rpc_error(error) from error
