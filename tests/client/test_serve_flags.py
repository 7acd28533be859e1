"""`infercept serve` passes the public port's TLS, token and metrics flags on to the scheduler."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from tooling.cli import PublicPortSecurity, add_security_flags, security_from_flags


def parse(*argv: str) -> PublicPortSecurity:
    parser = argparse.ArgumentParser()
    add_security_flags(parser)
    return security_from_flags(parser.parse_args(argv))


def security_args(security: PublicPortSecurity) -> tuple[list[str], bytes | None]:
    return security.scheduler_argv(), security.probe_root_certificates()


def test_without_flags_the_scheduler_gets_none_and_the_probe_is_plaintext() -> None:
    assert security_args(parse()) == ([], None)


def test_tls_tokens_and_metrics_reach_the_scheduler_and_the_ca_the_probe(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\n")
    args = parse(
        "--tls-cert",
        "s.pem",
        "--tls-key",
        "s.key",
        "--tls-ca",
        str(ca),
        "--auth-token-file",
        "t",
        "--metrics-port",
        "9090",
    )
    scheduler, root_certificates = security_args(args)
    assert scheduler == [
        "--tls-cert", "s.pem", "--tls-key", "s.key", "--auth-token-file", "t", "--metrics-port", "9090"
    ]  # fmt: skip
    assert root_certificates == ca.read_bytes()


def test_a_certificate_without_its_key_or_ca_is_refused() -> None:
    with pytest.raises(ValueError, match="go together"):
        security_args(parse("--tls-cert", "s.pem", "--tls-key", "s.key"))
