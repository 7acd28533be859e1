"""How the scheduler reaches its executor: plaintext or TLS (mutual with a client certificate),
and the executor's internal bearer token."""

from __future__ import annotations

import dataclasses

from infercept.tls import ClientTls
from scheduler_svc.executor_client import ExecutorClient


@dataclasses.dataclass(frozen=True)
class ExecutorLink:
    """TLS towards the executor (None: plaintext) and its token (None: send none)."""

    tls: ClientTls | None = None
    token: str | None = None

    def client(self, address: str) -> ExecutorClient:
        """A client of the executor at `address`; TlsConfigError if a TLS file cannot be read."""
        return ExecutorClient(address, self.tls.credentials() if self.tls else None, self.token)
