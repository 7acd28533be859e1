"""The scheduler's side of the executor's internal API: Describe, Reset, and one long-lived
Run stream over which each plan is answered by its result.

Every failure of the link (an RPC error, a write to a stream that ended, a step past its
deadline, anything else the channel raises) surfaces as one exception, ExecutorUnavailable, so
the step loop has one thing to recover from. Reset and Run carry this scheduler's random client
id, with which the executor's lease tells it from any other scheduler.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc

from infercept.channel import open_aio_channel
from infercept.v1 import executor_pb2 as pb
from infercept.v1 import executor_pb2_grpc
from scheduler_svc.config import ExecutorDescription
from svc_common import serving
from svc_common.step_wire import WIRE_VERSION

# The executor's metadata key for the client id (executor_svc/lease.py, not imported: no torch here).
CLIENT_ID_KEY = "infercept-client-id"

log = structlog.get_logger(__name__)


class ExecutorUnavailable(RuntimeError):
    """The executor cannot be reached, or its Run stream broke."""


class WireVersionMismatch(ExecutorUnavailable):
    """The executor reads and writes plans in another wire form than this scheduler."""


PROFILE_TIMEOUT_S = 600.0  # a first measurement of a large model takes minutes
DEFAULT_STEP_TIMEOUT_S = 120.0  # as LinkConfig.step_timeout_s: generous for a long CPU prefill
RESET_TIMEOUT_S = 10.0  # as LinkConfig.reset_timeout_s
LEASE_RETRY_S = 0.2  # between Resets while another scheduler holds the executor
# gRPC backs off reconnecting up to 2 minutes by default; a restarted executor is wanted at once.
RECONNECT_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
)


class ExecutorClient:
    def __init__(
        self,
        address: str,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        step_timeout_s: float = DEFAULT_STEP_TIMEOUT_S,
        reset_timeout_s: float = RESET_TIMEOUT_S,
    ) -> None:
        """credentials: TLS to the executor (None: plaintext); token: the executor's bearer token.
        `step_timeout_s`: the longest one plan may take before the executor counts as hung;
        `reset_timeout_s`: the same for a Reset (and a health probe)."""
        self.address = address
        self.step_timeout_s = step_timeout_s
        self.reset_timeout_s = reset_timeout_s
        self.client_id = secrets.token_hex(16)
        self._channel = open_aio_channel(
            address,
            (*serving.message_options(serving.EXECUTOR_MAX_MESSAGE_BYTES), *RECONNECT_OPTIONS),
            credentials,
            token,
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
        """What the executor serves; WireVersionMismatch if it speaks another plan wire form (its
        plans would be misread, not refused), ExecutorUnavailable if it does not answer."""
        try:
            response = await self._stub.Describe(pb.DescribeRequest(), timeout=30.0)
        except grpc.aio.AioRpcError as error:
            raise ExecutorUnavailable(f"Describe failed: {error.code().name}: {error.details()}") from error
        if response.wire_version != WIRE_VERSION:
            raise WireVersionMismatch(
                f"the executor at {self.address} (version {response.version or '?'}) speaks plan wire "
                f"version {response.wire_version}, this scheduler {WIRE_VERSION}: run both from one release"
            )
        return executor_description(response), response

    async def profile(self, timeout_s: float = PROFILE_TIMEOUT_S) -> pb.ProfileResponse:
        """The executor's measured cost model (measured on first use, then cached by the executor)."""
        try:
            return await self._stub.Profile(pb.ProfileRequest(), timeout=timeout_s)
        except grpc.aio.AioRpcError as error:
            raise ExecutorUnavailable(f"Profile failed: {error.code().name}: {error.details()}") from error

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """What Reset and Run carry: the client id (where credentials would join it)."""
        return ((CLIENT_ID_KEY, self.client_id),)

    async def is_serving(self) -> bool:
        """Whether the executor answers SERVING within reset_timeout_s and the Run stream, if
        open, has not ended (never raises)."""
        if self._call is not None and self._call.done():
            return False  # the executor went away (perhaps it is back, but it forgot everything)
        try:
            response = await self._health.Check(
                health_pb2.HealthCheckRequest(service=""), timeout=self.reset_timeout_s
            )
        except Exception:  # any failure of the probe means "not reachable now"
            return False
        return response.status == health_pb2.HealthCheckResponse.SERVING

    async def reset(self) -> None:
        """Forget the old Run stream, Reset the executor (taking its lease) and open a new stream,
        which holds the lease while this scheduler lives. ExecutorUnavailable on any failure."""
        await self._close_stream()
        try:
            await self._reset_when_free()
            # A bidirectional call opened without an iterator is written to explicitly.
            self._call = self._stub.Run(metadata=self.metadata())  # type: ignore[call-arg]
        except grpc.aio.AioRpcError as error:
            raise ExecutorUnavailable(f"Reset failed: {error.code().name}: {error.details()}") from error
        except Exception as error:  # the channel may fail in other ways (closed, cancelled)
            raise ExecutorUnavailable(f"Reset failed: {error!r}") from error

    async def _reset_when_free(self) -> None:
        """Reset, retried while another scheduler's lease holds the executor, for at most
        reset_timeout_s: a scheduler restarted after a kill -9 may come before the executor has
        seen its predecessor's stream break (the lease is released the moment it does)."""
        deadline_s = time.monotonic() + self.reset_timeout_s
        while True:
            try:
                await self._stub.Reset(
                    pb.ResetRequest(), timeout=self.reset_timeout_s, metadata=self.metadata()
                )
                return
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.FAILED_PRECONDITION or time.monotonic() >= deadline_s:
                    raise
            await asyncio.sleep(LEASE_RETRY_S)

    async def run(self, plan: pb.StepPlan) -> pb.StepResult:
        """Send one plan on the Run stream and wait for its result, at most step_timeout_s.
        ExecutorUnavailable on any failure of the link, a hung executor included."""
        await self.send(plan)
        return await self.receive(plan)

    async def send(self, plan: pb.StepPlan) -> None:
        """Write one plan on the Run stream, within step_timeout_s; `receive` gives the results in
        the order sent (a plan sent while another computes waits in the stream, so the executor
        finds it at once). ExecutorUnavailable on any failure of the link."""
        async with self._link_errors(plan), asyncio.timeout(self.step_timeout_s):
            if self._call is None:
                self._call = self._stub.Run(metadata=self.metadata())  # type: ignore[call-arg]
            await self._call.write(plan)

    async def receive(self, plan: pb.StepPlan) -> pb.StepResult:
        """The result of `plan`, the oldest plan sent and not yet answered, within step_timeout_s.
        ExecutorUnavailable on any failure of the link, a hung executor included."""
        async with self._link_errors(plan):
            # asyncio.timeout, not wait_for: no task per step, the read runs in this one.
            async with asyncio.timeout(self.step_timeout_s):
                if self._call is None:
                    raise ExecutorUnavailable("no Run stream is open")
                result = await self._call.read()
            if result is grpc.aio.EOF:  # type: ignore[attr-defined]
                raise ExecutorUnavailable("the executor closed the Run stream")
            assert isinstance(result, pb.StepResult)
            if result.step_id != plan.step_id:
                raise ExecutorUnavailable(f"result of step {result.step_id} where {plan.step_id} was due")
            return result

    @contextlib.asynccontextmanager
    async def _link_errors(self, plan: pb.StepPlan) -> AsyncIterator[None]:
        """Every failure inside as ExecutorUnavailable, the stream closed (it may be broken)."""
        try:
            yield
        except ExecutorUnavailable:
            await self._close_stream()
            raise
        except TimeoutError as error:  # the builtin TimeoutError only from 3.11
            await self._close_stream()
            raise ExecutorUnavailable(
                f"step {plan.step_id} took longer than {self.step_timeout_s:g}s: the executor is hung"
            ) from error
        except grpc.aio.AioRpcError as error:
            await self._close_stream()
            raise ExecutorUnavailable(f"Run stream failed: {error.code().name}: {error.details()}") from error
        except Exception as error:  # e.g. InvalidStateError: a write to a stream that already ended
            await self._close_stream()
            raise ExecutorUnavailable(f"Run stream failed: {error!r}") from error

    async def _close_stream(self) -> None:
        """Cancel the Run stream, if any; never raises (the stream may be broken already)."""
        if self._call is not None:
            call, self._call = self._call, None
            call.cancel()

    async def close(self) -> None:
        await self._close_stream()
        await self._channel.close(None)


def executor_description(response: pb.DescribeResponse) -> ExecutorDescription:
    """What the scheduler keeps of a Describe answer."""
    m = response.model
    return ExecutorDescription(
        block_size=response.block_size_tokens,
        num_device_blocks=response.num_device_blocks,
        num_host_blocks=response.num_host_blocks,
        vocab_size=m.vocab_size,
        max_model_len=m.max_model_len,
        eos_token_ids=tuple(m.eos_token_ids),
        model=m.name,
        device=response.device,
        dtype=response.dtype,
        chat_template=response.chat_template,
        chat_template_tokens=tuple(sorted(response.chat_template_tokens.items())),
    )
