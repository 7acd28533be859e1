"""A real stack (executor + scheduler processes, the `tiny` random model) with a gateway served
from a thread of the test process, shared by the package; the official `openai` package as client."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from gateway.background import serve_in_thread
from gateway.config import GatewayConfig
from tests.e2e.conftest import stack_args
from tooling.launcher import Stack, launch

# Short enough for the expiry test to wait for, long enough for a test's follow-up.
PAUSE_TTL_S = 30.0


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    executor_args, scheduler_args = stack_args("preserve")
    logs: Path = tmp_path_factory.mktemp("stack")
    with launch(executor_args, scheduler_args, log_dir=logs) as running:
        yield running


@pytest.fixture(scope="package")
def gateway_url(stack: Stack) -> Iterator[str]:
    with serve_in_thread(
        GatewayConfig(scheduler_address=stack.scheduler_address, pause_ttl_s=PAUSE_TTL_S)
    ) as url:
        yield url


@pytest.fixture
def client(gateway_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway_url}/v1", api_key="unused", max_retries=0, timeout=60.0) as c:
        yield c
