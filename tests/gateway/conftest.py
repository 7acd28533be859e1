"""A real stack (executor + scheduler processes, the `tiny` random model) with a gateway served
from a thread of the test process, shared by the package; the official `openai` package as client."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from gateway.background import serve_in_thread
from gateway.config import GatewayConfig
from tests.e2e.conftest import launched
from tooling.launcher import Stack

# Short enough for the expiry test to wait for, long enough for a test's follow-up.
PAUSE_TTL_S = 30.0


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with launched(tmp_path_factory, "preserve") as running:
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
