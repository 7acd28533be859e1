"""TLS credentials of a client from PEM files: the CA that signed the server's certificate (root
certificates), and optionally the client's own certificate and key for mutual TLS. The servers'
side is svc_common/tls.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import grpc


class TlsConfigError(ValueError):
    """A TLS flag combination is incomplete, or a PEM file cannot be read."""


def read_pem(path: str | Path, what: str) -> bytes:
    """The bytes of a PEM file; TlsConfigError (naming `what`) if it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise TlsConfigError(f"cannot read the {what} {path}: {error}") from error


@dataclasses.dataclass(frozen=True)
class ClientTls:
    """A client's TLS files: the CA of the server's certificate, and for mutual TLS the client's
    certificate chain and key."""

    ca_path: Path
    cert_path: Path | None = None
    key_path: Path | None = None

    @staticmethod
    def from_flags(
        ca: str | Path | None, cert: str | Path | None = None, key: str | Path | None = None
    ) -> ClientTls | None:
        """None when no CA is given (plaintext); TlsConfigError for an incomplete combination."""
        if not ca:
            if cert or key:
                raise TlsConfigError("a client certificate needs the server's CA too")
            return None
        if bool(cert) != bool(key):
            raise TlsConfigError("the client certificate and its key go together")
        return ClientTls(Path(ca), Path(cert) if cert else None, Path(key) if key else None)

    def credentials(self) -> grpc.ChannelCredentials:
        """gRPC channel credentials; TlsConfigError if a file cannot be read."""
        return channel_credentials(
            read_pem(self.ca_path, "CA certificate"),
            read_pem(self.cert_path, "client certificate") if self.cert_path else None,
            read_pem(self.key_path, "client key") if self.key_path else None,
        )


def channel_credentials(
    root_certificates: bytes, cert_chain: bytes | None = None, private_key: bytes | None = None
) -> grpc.ChannelCredentials:
    """Channel credentials trusting `root_certificates` (PEM), presenting a client certificate
    when given one."""
    return grpc.ssl_channel_credentials(
        root_certificates=root_certificates, private_key=private_key, certificate_chain=cert_chain
    )
