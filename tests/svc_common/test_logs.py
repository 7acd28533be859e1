"""Logging follows sys.stderr as it is now: a stream swapped and closed after set-up (pytest's
capture between tests) must not kill the next log line, nor a step loop that logs it."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator

import pytest
import structlog

from svc_common.logs import configure_logging


@pytest.fixture
def restored_structlog() -> Iterator[None]:
    config = structlog.get_config()
    yield
    structlog.configure(**config)


def test_a_line_goes_to_the_stderr_of_the_moment(
    monkeypatch: pytest.MonkeyPatch, restored_structlog: None
) -> None:
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging("info")
    log = structlog.get_logger()
    log.info("first.line")
    assert "first.line" in first.getvalue()
    first.close()
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    log.info("second.line")  # no ValueError: I/O operation on closed file
    assert "second.line" in second.getvalue()
