"""Which scheduler the executor serves: a lease held by one client id at a time.

A scheduler names itself with a random client id (gRPC metadata `CLIENT_ID_KEY`) on Reset and
Run. The first to come holds the lease; any other client's Reset or Run is refused (LeaseHeld,
FAILED_PRECONDITION at the edge) while the holder has a Run stream open, or for `timeout_s`
after its last Reset or Run. A holder whose streams have all ended (it stopped, or died and its
stream broke) releases the lease at once, so a restarted scheduler takes over without waiting.

Callers without an id share the empty id "" (tools and tests); for them one Run stream at a
time is the rule, since two anonymous streams cannot be told apart.
"""

from __future__ import annotations

import time
from collections.abc import Callable

CLIENT_ID_KEY = "infercept-client-id"
DEFAULT_TIMEOUT_S = 30.0


class LeaseHeld(Exception):
    """Another scheduler holds the executor."""


class Lease:
    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S, clock: Callable[[], float] = time.monotonic):
        self.timeout_s = timeout_s
        self._clock = clock
        self.holder: str | None = None
        self._num_streams = 0  # Run streams of the holder still open
        self._expires_s = 0.0

    def acquire(self, client_id: str) -> None:
        """Take or renew the lease for `client_id` (a Reset); LeaseHeld if another holds it."""
        if self.holder is not None and self.holder != client_id and self._is_active():
            raise LeaseHeld(
                f"the executor serves another scheduler ({self.holder[:8] or 'anonymous'}...); "
                "one executor serves one scheduler at a time"
            )
        if self.holder != client_id:
            self.holder, self._num_streams = client_id, 0
        self._expires_s = self._clock() + self.timeout_s

    def open_stream(self, client_id: str) -> None:
        """A Run stream of `client_id` starts; LeaseHeld if it may not."""
        if client_id == "" and self.holder == "" and self._num_streams:
            raise LeaseHeld("another Run stream is open: one executor serves one scheduler")
        self.acquire(client_id)
        self._num_streams += 1

    def close_stream(self, client_id: str) -> None:
        """A Run stream of `client_id` ended; its last one releases the lease."""
        if self.holder != client_id:
            return  # a stream of a holder that was replaced meanwhile
        self._num_streams = max(self._num_streams - 1, 0)
        if self._num_streams == 0:
            self.holder = None

    def _is_active(self) -> bool:
        return self._num_streams > 0 or self._clock() < self._expires_s
