"""A real stack run as an operator would expose it: TLS on the public API and on the executor
link, client tokens with two identities, the executor's internal token (from the launcher), and
both metrics endpoints. Auth, TLS, ownership of requests, ids, metrics and the stats log."""

from __future__ import annotations

import os
import re
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from infercept import Client, InferceptError, SamplingParams, ScriptedCall
from infercept.channel import open_channel
from infercept.tls import channel_credentials
from infercept.v1 import executor_pb2, executor_pb2_grpc
from svc_common.healthcheck import check
from tests.certs import Pki, make_pki
from tests.e2e.conftest import stack_args
from tooling.launcher import Stack, launch

ALICE, BOB = "alice-secret-token", "bob-secret-token"
PUBLIC_ID = re.compile(r"^[A-Za-z0-9_-]{22}$")  # secrets.token_urlsafe(16)
LONG = SamplingParams(max_tokens=2000, ignore_eos=True)
STATS_WAIT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class SecureStack:
    def __init__(self, stack: Stack, pki: Pki, scheduler_metrics_port: int, executor_metrics_port: int):
        self.stack = stack
        self.pki = pki
        self.address = stack.scheduler_address
        self.scheduler_metrics_port = scheduler_metrics_port
        self.executor_metrics_port = executor_metrics_port

    def client(self, token: str | None = ALICE, ca: bytes | None = None) -> Client:
        return Client(self.address, root_certificates=ca or self.pki.ca_pem, token=token)


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureStack]:
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    directory = tmp_path_factory.mktemp("secure")
    pki = make_pki(directory / "pki")
    tokens = directory / "tokens"
    tokens.write_text(f"alice {ALICE}\nbob {BOB}\n")
    scheduler_metrics_port, executor_metrics_port = free_port(), free_port()
    executor_args, scheduler_args = stack_args("preserve")
    executor_args += ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)]
    executor_args += ["--metrics-port", str(executor_metrics_port)]
    scheduler_args += ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)]
    scheduler_args += ["--auth-token-file", str(tokens), "--executor-ca", str(pki.ca)]
    scheduler_args += ["--metrics-port", str(scheduler_metrics_port), "--stats-interval-s", "0.5"]
    with launch(
        executor_args,
        scheduler_args,
        log_dir=directory / "logs",
        scheduler_root_certificates=pki.ca_pem,
        executor_root_certificates=pki.ca_pem,
    ) as stack:
        yield SecureStack(stack, pki, scheduler_metrics_port, executor_metrics_port)


# --- Authentication and TLS ----------------------------------------------------------------------


def test_a_client_with_the_ca_and_a_token_is_served_and_sees_unguessable_ids(secure: SecureStack) -> None:
    with secure.client() as client:
        first = client.generate(prompt_token_ids=[1, 2, 3], sampling=SamplingParams(max_tokens=4))
        second = client.generate(prompt_token_ids=[1, 2, 3], sampling=SamplingParams(max_tokens=4))
    assert len(first.output_token_ids) == 4
    assert PUBLIC_ID.match(first.request_id) and PUBLIC_ID.match(second.request_id), first.request_id
    assert first.request_id != second.request_id


@pytest.mark.parametrize("token", [None, "not-a-token", ALICE + "x"], ids=["none", "wrong", "longer"])
def test_a_call_without_a_valid_token_is_unauthenticated(secure: SecureStack, token: str | None) -> None:
    with secure.client(token=token) as client, pytest.raises(InferceptError) as refused:
        client.generate(prompt_token_ids=[1, 2, 3], sampling=SamplingParams(max_tokens=4), timeout_s=30)
    assert refused.value.code == "UNAUTHENTICATED"
    with secure.client(token=token) as client, pytest.raises(InferceptError) as refused:
        client.server_info(timeout_s=30)
    assert refused.value.code == "UNAUTHENTICATED"


def test_health_answers_without_a_token_over_tls(secure: SecureStack) -> None:
    assert check(secure.address, root_certificates=secure.pki.ca_pem)[0]


def test_a_plaintext_client_cannot_reach_the_tls_port(secure: SecureStack) -> None:
    with Client(secure.address, token=ALICE) as client, pytest.raises(InferceptError) as refused:
        client.server_info(timeout_s=10)
    assert refused.value.code == "UNAVAILABLE"


def test_the_executor_refuses_a_stranger_without_its_token(secure: SecureStack) -> None:
    credentials = channel_credentials(secure.pki.ca_pem)
    with open_channel(secure.stack.executor_address, (), credentials) as channel:
        stub = executor_pb2_grpc.ExecutorStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Reset(executor_pb2.ResetRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with open_channel(secure.stack.executor_address, ()) as plaintext:
        with pytest.raises(grpc.RpcError) as refused:
            executor_pb2_grpc.ExecutorStub(plaintext).Describe(executor_pb2.DescribeRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    # The scheduler, which holds the token, still drives it.
    with secure.client() as client:
        assert (
            len(
                client.generate(
                    prompt_token_ids=[4, 5], sampling=SamplingParams(max_tokens=3)
                ).output_token_ids
            )
            == 3
        )


# --- Ownership -----------------------------------------------------------------------------------


def test_a_stranger_cannot_abort_anothers_request_but_its_owner_can(secure: SecureStack) -> None:
    with secure.client(ALICE) as alice, secure.client(BOB) as bob:
        stream = alice.stream(prompt_token_ids=[1, 2, 3], sampling=LONG, timeout_s=120)
        events = iter(stream)
        next(events)  # Accepted
        request_id = stream.request_id
        with pytest.raises(InferceptError) as refused:
            bob.abort(request_id, timeout_s=10)
        assert refused.value.code == "PERMISSION_DENIED"
        with pytest.raises(InferceptError) as unknown:
            alice.abort(request_id[:-1] + ("A" if request_id[-1] != "A" else "B"), timeout_s=10)
        assert unknown.value.code == "NOT_FOUND"
        alice.abort(request_id, timeout_s=10)
        for _ in events:
            pass
    assert stream.result.finish_reason == "abort"


# --- Metrics and the stats log -------------------------------------------------------------------


# metric family -> {(sample name, labels): value}
Metrics = dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]


def scrape(port: int) -> Metrics:
    """metric family -> {(sample name, labels): value}, parsed by prometheus_client."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        family.name: {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}
        for family in text_string_to_metric_families(text)
    }


def value(metrics: Metrics, family: str, sample: str, **labels: str) -> float:
    return metrics[family][(sample, tuple(sorted(labels.items())))]


def test_metrics_are_served_and_move_with_requests(secure: SecureStack) -> None:
    before = scrape(secure.scheduler_metrics_port)
    script = [ScriptedCall(after_tokens=3, tool="search", wait_s=0.05, returned_token_ids=[7, 8, 9])]
    with secure.client() as client:
        for _ in range(3):
            client.generate(
                prompt_token_ids=[1, 2, 3, 4], sampling=SamplingParams(max_tokens=6), script=script
            )
    with secure.client(token=None) as client, pytest.raises(InferceptError):
        client.server_info(timeout_s=10)
    method = "/infercept.v1.Generation/GetServerInfo"
    session = "/infercept.v1.Generation/Session"
    after = scrape(secure.scheduler_metrics_port)

    def moved(family: str, sample: str, **labels: str) -> float:
        now = after.get(family, {}).get((sample, tuple(sorted(labels.items()))), 0.0)
        return now - before.get(family, {}).get((sample, tuple(sorted(labels.items()))), 0.0)

    # A finished RPC is counted by the server's interceptor after the client already has its
    # answer: scrape again (a bounded wait) until the last calls are in.
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and not (
        moved("infercept_rpcs", "infercept_rpcs_total", method=method, code="UNAUTHENTICATED") >= 1
        and moved("infercept_rpcs", "infercept_rpcs_total", method=session, code="OK") >= 3
    ):
        time.sleep(0.1)
        after = scrape(secure.scheduler_metrics_port)

    for family in (
        "infercept_request_ttft_seconds",
        "infercept_request_time_per_output_token_seconds",
        "infercept_request_normalized_latency_seconds",
        "infercept_request_end_to_end_seconds",
    ):
        assert moved(family, family + "_count") >= 3, family
    assert moved("infercept_tokens", "infercept_tokens_total", kind="prompt") >= 12
    assert moved("infercept_tokens", "infercept_tokens_total", kind="decode") >= 15
    assert moved("infercept_tokens", "infercept_tokens_total", kind="returned") >= 9
    assert moved("infercept_interceptions", "infercept_interceptions_total") >= 3
    assert moved("infercept_requests_finished", "infercept_requests_finished_total", reason="length") >= 3
    assert moved("infercept_iteration_step_seconds", "infercept_iteration_step_seconds_count") > 0
    assert moved("infercept_rpcs", "infercept_rpcs_total", method=method, code="UNAUTHENTICATED") >= 1
    assert moved("infercept_rpcs", "infercept_rpcs_total", method=session, code="OK") >= 3
    assert 0.0 <= value(after, "infercept_recompute_share", "infercept_recompute_share") <= 1.0
    assert value(after, "infercept_device_blocks_total", "infercept_device_blocks_total") > 0
    assert "infercept_requests" in after and "infercept_swapped_blocks" in after

    executor = scrape(secure.executor_metrics_port)
    assert value(executor, "infercept_executor_step_seconds", "infercept_executor_step_seconds_count") > 0
    assert value(executor, "infercept_executor_idle_seconds", "infercept_executor_idle_seconds_count") > 0
    assert value(executor, "infercept_executor_tokens", "infercept_executor_tokens_total") > 0
    run = "/infercept.v1.Executor/Reset"
    assert value(executor, "infercept_rpcs", "infercept_rpcs_total", method=run, code="OK") >= 1


def test_the_scheduler_logs_a_stats_line_periodically(secure: SecureStack) -> None:
    log_path: Path = secure.stack.log_dir / "scheduler.log"
    deadline = time.monotonic() + STATS_WAIT_S
    while time.monotonic() < deadline:
        lines = [
            line
            for line in log_path.read_text(errors="replace").splitlines()
            if " stats " in line or '"stats"' in line
        ]
        if len(lines) >= 2:
            break
        time.sleep(0.2)
    assert len(lines) >= 2, log_path.read_text()[-2000:]
    assert "tokens_per_s" in lines[-1] and "device_blocks_free" in lines[-1]
