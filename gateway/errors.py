"""Errors the gateway answers, in OpenAI's JSON shape, and the HTTP status of each scheduler error.

{"error": {"message": "...", "type": "invalid_request_error", "param": "n", "code": null}}
"""

from __future__ import annotations

from typing import Any

from infercept.errors import StatusError

# gRPC status name -> (HTTP status, OpenAI error type).
_STATUS_BY_CODE: dict[str, tuple[int, str]] = {
    "INVALID_ARGUMENT": (400, "invalid_request_error"),
    "OUT_OF_RANGE": (400, "invalid_request_error"),
    "FAILED_PRECONDITION": (400, "invalid_request_error"),
    "NOT_FOUND": (404, "invalid_request_error"),
    "RESOURCE_EXHAUSTED": (429, "rate_limit_error"),
    "UNAVAILABLE": (503, "service_unavailable"),
    "DEADLINE_EXCEEDED": (504, "timeout"),
}


class GatewayError(Exception):
    """A request the gateway answers with an error: HTTP `status`, OpenAI `type`, the offending
    request field `param` (or None) and a machine-readable `code` (or None).

    The HTTP edge's rendering of an error, not a third (code, message) class: a gRPC status from
    the scheduler (a StatusError) becomes one in from_infercept, by the table above; its own
    refusals (a malformed body) are HTTP statuses from the start. Its `code` is OpenAI's
    lowercase name ("context_length_exceeded"), not a gRPC status name."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    @classmethod
    def from_infercept(cls, error: StatusError) -> GatewayError:
        """The HTTP error for a failed scheduler call, or any StatusError (unknown codes: 500)."""
        status, type_ = _STATUS_BY_CODE.get(error.code, (500, "server_error"))
        code = "context_length_exceeded" if error.code == "OUT_OF_RANGE" else error.code.lower()
        return cls(status, error.message, type_=type_, code=code)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> GatewayError:
    return GatewayError(400, message, param=param, code=code)
