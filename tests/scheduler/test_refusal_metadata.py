"""A temporary refusal carries its retry hint to the client as trailing metadata."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from scheduler_svc.admission import RequestError
from scheduler_svc.servicer import _refuse


class _Context:
    """What _refuse uses of a grpc.aio.ServicerContext, recorded."""

    def __init__(self) -> None:
        self.trailing_metadata: tuple[tuple[str, str], ...] = ()
        self.status: tuple[grpc.StatusCode, str] | None = None

    def set_trailing_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.trailing_metadata = metadata

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.status = (code, details)


def _refused(error: RequestError) -> _Context:
    context = _Context()
    asyncio.run(_refuse(context, error))  # type: ignore[arg-type]
    return context


def test_an_overload_refusal_says_when_to_retry_in_milliseconds() -> None:
    context = _refused(RequestError("RESOURCE_EXHAUSTED", "overloaded; retry in 1.25 s", retry_after_s=1.25))
    assert context.status == (grpc.StatusCode.RESOURCE_EXHAUSTED, "overloaded; retry in 1.25 s")
    assert dict(context.trailing_metadata) == {"retry-after-ms": "1250"}


def test_a_permanent_refusal_carries_no_hint() -> None:
    context: Any = _refused(RequestError("INVALID_ARGUMENT", "the prompt is empty"))
    assert context.status[0] == grpc.StatusCode.INVALID_ARGUMENT and context.trailing_metadata == ()
