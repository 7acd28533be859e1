"""A gateway served from a background thread of this process, on a free port (tests, benchmarks
and the demo start one beside a launched scheduler)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from gateway.config import GatewayConfig
from gateway.main import Command, build_server


class GatewayStartError(RuntimeError):
    """The gateway did not start (its scheduler did not answer, or the port was taken)."""


@contextlib.contextmanager
def serve_in_thread(
    config: GatewayConfig, host: str = "127.0.0.1", startup_timeout_s: float = 60.0
) -> Iterator[str]:
    """Serve `config` until the block ends; yields the base URL, "http://host:port"."""
    server = build_server(Command(config, host, 0, None))
    thread = threading.Thread(target=server.run, name="gateway", daemon=True)
    thread.start()
    deadline_s = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline_s:
            server.should_exit = True
            raise GatewayStartError(f"the gateway did not start within {startup_timeout_s:g}s")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{server.bound_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30.0)
