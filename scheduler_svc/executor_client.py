"""The scheduler's side of the executor's internal API: Describe, Reset, and one long-lived
Run stream over which each plan is answered by its result."""

from __future__ import annotations

import asyncio
import contextlib
import time

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc

from infercept import serving
from infercept.v1 import executor_pb2 as pb
from infercept.v1 import executor_pb2_grpc
from scheduler_svc.config import ExecutorDescription

log = structlog.get_logger(__name__)


class ExecutorUnavailable(RuntimeError):
    """The executor cannot be reached, or its Run stream broke."""


PROFILE_TIMEOUT_S = 600.0  # a first measurement of a large model takes minutes


class ExecutorClient:
    def __init__(self, address: str) -> None:
        self.address = address
        self._channel = grpc.aio.insecure_channel(
            address, options=serving.message_options(serving.EXECUTOR_MAX_MESSAGE_BYTES)
        )
        self._stub = executor_pb2_grpc.ExecutorStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._call: grpc.aio.StreamStreamCall[pb.StepPlan, pb.StepResult] | None = None

    async def wait_until_serving(self, timeout_s: float) -> None:
        """Poll the executor's health service until it is SERVING; ExecutorUnavailable after timeout_s."""
        deadline = time.monotonic() + timeout_s
        last_error = "no answer"
        while time.monotonic() < deadline:
            try:
                response = await self._health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2.0)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last_error = f"health status {response.status}"
            except grpc.aio.AioRpcError as error:
                last_error = f"{error.code().name}: {error.details()}"
            await asyncio.sleep(0.2)
        raise ExecutorUnavailable(
            f"executor at {self.address} is not serving after {timeout_s:.0f}s ({last_error})"
        )

    async def describe(self) -> tuple[ExecutorDescription, pb.DescribeResponse]:
        try:
            response = await self._stub.Describe(pb.DescribeRequest(), timeout=30.0)
        except grpc.aio.AioRpcError as error:
            raise ExecutorUnavailable(f"Describe failed: {error.code().name}: {error.details()}") from error
        m = response.model
        description = ExecutorDescription(
            block_size=response.block_size_tokens,
            num_device_blocks=response.num_device_blocks,
            num_host_blocks=response.num_host_blocks,
            vocab_size=m.vocab_size,
            max_model_len=m.max_model_len,
            eos_token_ids=tuple(m.eos_token_ids),
            model=m.name,
            device=response.device,
            dtype=response.dtype,
        )
        return description, response

    async def profile(self, timeout_s: float = PROFILE_TIMEOUT_S) -> pb.ProfileResponse:
        """The executor's measured cost model (measured on first use, then cached by the executor)."""
        try:
            return await self._stub.Profile(pb.ProfileRequest(), timeout=timeout_s)
        except grpc.aio.AioRpcError as error:
            raise ExecutorUnavailable(f"Profile failed: {error.code().name}: {error.details()}") from error

    async def reset(self) -> None:
        await self._close_stream()
        try:
            await self._stub.Reset(pb.ResetRequest(), timeout=30.0)
        except grpc.aio.AioRpcError as error:
            raise ExecutorUnavailable(f"Reset failed: {error.code().name}: {error.details()}") from error

    async def run(self, plan: pb.StepPlan) -> pb.StepResult:
        """Send one plan on the Run stream and wait for its result."""
        try:
            if self._call is None:
                # A bidirectional call opened without an iterator is written to explicitly.
                self._call = self._stub.Run()  # type: ignore[call-arg]
            await self._call.write(plan)
            result = await self._call.read()
        except grpc.aio.AioRpcError as error:
            self._call = None
            raise ExecutorUnavailable(f"Run stream failed: {error.code().name}: {error.details()}") from error
        if result is grpc.aio.EOF:  # type: ignore[attr-defined]
            self._call = None
            raise ExecutorUnavailable("the executor closed the Run stream")
        assert isinstance(result, pb.StepResult)
        return result

    async def _close_stream(self) -> None:
        if self._call is not None:
            call, self._call = self._call, None
            with contextlib.suppress(grpc.aio.AioRpcError):
                await call.done_writing()
            call.cancel()

    async def close(self) -> None:
        await self._close_stream()
        await self._channel.close(None)
