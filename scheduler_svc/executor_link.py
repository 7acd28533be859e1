"""How the scheduler reaches its executor: plaintext or TLS (mutual with a client certificate),
and the executor's internal bearer token."""

from __future__ import annotations

import dataclasses

from infercept.tls import ClientTls
from scheduler_svc.config import DEFAULT_LINK, LinkConfig
from scheduler_svc.executor_client import ExecutorClient


@dataclasses.dataclass(frozen=True)
class ExecutorLink:
    """TLS towards the executor (None: plaintext) and its token (None: send none)."""

    tls: ClientTls | None = None
    token: str | None = None

    def client(self, address: str, timeouts: LinkConfig = DEFAULT_LINK) -> ExecutorClient:
        """A client of the executor at `address` with `timeouts`' step and reset deadlines;
        TlsConfigError if a TLS file cannot be read."""
        credentials = self.tls.credentials() if self.tls else None
        return ExecutorClient(
            address, credentials, self.token, timeouts.step_timeout_s, timeouts.reset_timeout_s
        )
