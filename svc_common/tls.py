"""TLS credentials of the two servers from PEM files: a certificate chain and its private key
(``--tls-cert``, ``--tls-key``), and optionally a CA whose client certificates the server then
requires (mutual TLS). The clients' side is infercept/tls.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import grpc

from infercept.tls import TlsConfigError, read_pem


@dataclasses.dataclass(frozen=True)
class ServerTls:
    """A server's TLS files: certificate chain, private key, and the CA of required client
    certificates (None: clients are not asked for one)."""

    cert_path: Path
    key_path: Path
    client_ca_path: Path | None = None

    @staticmethod
    def from_flags(
        cert: str | Path | None, key: str | Path | None, client_ca: str | Path | None = None
    ) -> ServerTls | None:
        """None when no flag is given (plaintext); TlsConfigError when only some are."""
        if not cert and not key:
            if client_ca:
                raise TlsConfigError("a client CA needs --tls-cert and --tls-key too")
            return None
        if not cert or not key:
            raise TlsConfigError("--tls-cert and --tls-key go together")
        return ServerTls(Path(cert), Path(key), Path(client_ca) if client_ca else None)

    def credentials(self) -> grpc.ServerCredentials:
        """gRPC server credentials; TlsConfigError if a file cannot be read."""
        pair = (read_pem(self.key_path, "TLS key"), read_pem(self.cert_path, "TLS certificate"))
        client_ca = read_pem(self.client_ca_path, "client CA") if self.client_ca_path else None
        return grpc.ssl_server_credentials(
            [pair], root_certificates=client_ca, require_client_auth=client_ca is not None
        )
