"""TLS credentials from PEM files, for the two servers and their clients.

Server side: a certificate chain and its private key (``--tls-cert``, ``--tls-key``), and
optionally a CA whose client certificates the server then requires (mutual TLS). Client side: the
CA that signed the server's certificate (root certificates), and optionally the client's own
certificate and key for mutual TLS.
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
