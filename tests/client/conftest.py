from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.client.protocol_server import ProtocolPeer, start_protocol_peer


@pytest.fixture(scope="module")
def peer() -> Iterator[tuple[str, ProtocolPeer]]:
    """A protocol peer generating as fast as it can: (address, servicer)."""
    server, address, servicer = start_protocol_peer()
    yield address, servicer
    server.stop(grace=None)


@pytest.fixture
def slow_peer() -> Iterator[tuple[str, ProtocolPeer]]:
    """A peer generating one token per 10 ms, for acting on a request while it runs."""
    server, address, servicer = start_protocol_peer(token_delay_s=0.01)
    yield address, servicer
    server.stop(grace=None)
