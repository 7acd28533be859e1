"""The scheduler's link to its executor (ExecutorLink): TLS, mutual TLS and the internal token,
against an in-process stand-in serving the Executor API's Describe, Reset and Run behind the real
server security (svc_common.serving)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from executor_svc.main import EXECUTOR_TOKEN_ENV as EXECUTOR_ENV
from infercept.tls import ClientTls
from infercept.v1 import executor_pb2 as pb
from infercept.v1 import executor_pb2_grpc
from scheduler_svc.executor_client import ExecutorUnavailable, WireVersionMismatch
from scheduler_svc.executor_link import ExecutorLink
from scheduler_svc.main import EXECUTOR_TOKEN_ENV as SCHEDULER_ENV
from svc_common import serving
from svc_common.step_wire import WIRE_VERSION
from svc_common.tls import ServerTls
from tests.certs import Pki, make_pki
from tooling import launcher

TOKEN = "internal-token"


class StandIn(executor_pb2_grpc.ExecutorServicer):
    def __init__(self, wire_version: int = WIRE_VERSION) -> None:
        self.wire_version = wire_version

    async def Describe(
        self, request: pb.DescribeRequest, context: grpc.aio.ServicerContext
    ) -> pb.DescribeResponse:
        return pb.DescribeResponse(
            model=pb.ModelInfo(name="stand-in"), block_size_tokens=16, wire_version=self.wire_version
        )

    async def Reset(self, request: pb.ResetRequest, context: grpc.aio.ServicerContext) -> pb.ResetResponse:
        return pb.ResetResponse()

    async def Run(
        self, request_iterator: AsyncIterator[pb.StepPlan], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StepResult]:
        async for plan in request_iterator:
            yield pb.StepResult(step_id=plan.step_id)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def mtls_executor(pki: Pki) -> AsyncIterator[str]:
    """An Executor stand-in requiring TLS, a client certificate signed by the CA, and TOKEN."""
    security = serving.ServerSecurity(
        tls=ServerTls(pki.server_cert, pki.server_key, client_ca_path=pki.ca), tokens={TOKEN: "scheduler"}
    )
    server, _ = serving.new_server("infercept.v1.Executor", security.interceptors())
    # The generated type stubs declare every RPC abstract; at run time the servicer base answers
    # UNIMPLEMENTED for the RPCs a stand-in leaves out, which is all it needs.
    executor_pb2_grpc.add_ExecutorServicer_to_server(StandIn(), server)  # type: ignore[abstract]
    port = serving.bind(server, "127.0.0.1:0", security.credentials())
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)


async def describe(link: ExecutorLink, address: str) -> str:
    client = link.client(address)
    try:
        description, _ = await client.describe()
        return description.model
    finally:
        await client.close()


async def test_the_scheduler_reaches_an_executor_over_mutual_tls_with_its_token(
    pki: Pki, mtls_executor: str
) -> None:
    link = ExecutorLink(ClientTls(pki.ca, pki.client_cert, pki.client_key), TOKEN)
    assert await describe(link, mtls_executor) == "stand-in"


async def test_without_the_token_the_executor_refuses_the_scheduler(pki: Pki, mtls_executor: str) -> None:
    link = ExecutorLink(ClientTls(pki.ca, pki.client_cert, pki.client_key), token=None)
    with pytest.raises(ExecutorUnavailable, match="UNAUTHENTICATED"):
        await describe(link, mtls_executor)


async def test_the_token_reaches_the_executor_on_reset_and_on_every_step_of_the_run_stream(
    pki: Pki, mtls_executor: str
) -> None:
    client = ExecutorLink(ClientTls(pki.ca, pki.client_cert, pki.client_key), TOKEN).client(mtls_executor)
    try:
        await client.reset()
        assert [(await client.run(pb.StepPlan(step_id=i))).step_id for i in (1, 2)] == [1, 2]
    finally:
        await client.close()
    refused = ExecutorLink(ClientTls(pki.ca, pki.client_cert, pki.client_key), token=None).client(
        mtls_executor
    )
    try:
        with pytest.raises(ExecutorUnavailable, match="UNAUTHENTICATED"):
            await refused.reset()
        with pytest.raises(ExecutorUnavailable, match="UNAUTHENTICATED"):
            await refused.run(pb.StepPlan(step_id=1))
    finally:
        await refused.close()


async def test_without_a_client_certificate_the_executor_refuses_the_scheduler(
    pki: Pki, mtls_executor: str
) -> None:
    with pytest.raises(ExecutorUnavailable):
        await describe(ExecutorLink(ClientTls(pki.ca), TOKEN), mtls_executor)


async def test_the_scheduler_refuses_an_executor_speaking_another_plan_wire_form() -> None:
    """An executor of wire version 1 would read a version-2 plan as empty and answer nothing:
    Describe tells them apart before any plan is sent."""
    server, _ = serving.new_server("infercept.v1.Executor", [])
    executor_pb2_grpc.add_ExecutorServicer_to_server(StandIn(wire_version=0), server)  # type: ignore[abstract]
    port = serving.bind(server, "127.0.0.1:0", None)
    await server.start()
    try:
        with pytest.raises(WireVersionMismatch, match="wire version 0, this scheduler 2"):
            await describe(ExecutorLink(), f"127.0.0.1:{port}")
    finally:
        await server.stop(None)


def test_the_launcher_and_both_services_agree_on_the_token_variable() -> None:
    assert launcher.EXECUTOR_TOKEN_ENV == EXECUTOR_ENV == SCHEDULER_ENV
