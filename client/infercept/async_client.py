"""AsyncClient: the asyncio client (grpc.aio). Sync tools run in worker threads."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
import weakref
from collections.abc import AsyncIterator, Coroutine
from types import TracebackType
from typing import Any

import grpc
import grpc.aio

from infercept.channel import open_aio_channel
from infercept.errors import CANCELLED, InferceptError, closed_error, translated_rpc_errors
from infercept.events import Event
from infercept.result import GenerateResult
from infercept.resume import DEFAULT_RESUME, ResumePolicy
from infercept.server_info import ServerInfo, message_to_dict
from infercept.session import PendingCall, SessionState, StreamBase, tool_failed
from infercept.types import ClientConfig, RequestSpec, takes_fields_of
from infercept.v1 import generation_pb2 as pb
from infercept.v1 import generation_pb2_grpc


class AsyncStream(StreamBase):
    """The events of one request as they arrive, answering interceptions automatically (see
    Stream): `async for event in stream`. The request is sent when iteration starts; an
    AsyncStream is iterated once. Leaving the iteration before Finished, cancelling the task
    that iterates, or close() cancels the RPC, and the server aborts the request."""

    def __init__(
        self,
        stub: generation_pb2_grpc.GenerationAsyncStub,
        state: SessionState,
        timeout_s: float | None,
        resume: ResumePolicy = DEFAULT_RESUME,
    ):
        super().__init__(state, timeout_s, resume)
        self._stub = stub
        self._closed = asyncio.Event()
        self._call: grpc.aio.StreamStreamCall[pb.ClientEvent, pb.ServerEvent] | None = None
        self._is_started = False

    def close(self) -> None:
        """Cancel the request unless it has finished. Idempotent; call it from the loop's thread."""
        self._closed.set()
        if self._call is not None and not self._state.is_finished:
            self._call.cancel()

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    async def __aiter__(self) -> AsyncIterator[Event]:
        if self._is_started:
            raise RuntimeError("an AsyncStream can be iterated only once")
        if self._closed.is_set():
            raise closed_error()
        self._is_started = True
        self._start_deadline(time.monotonic())
        while True:
            call = self._call = self._stub.Session(None, timeout=self._call_timeout_s(time.monotonic()))
            try:
                with translated_rpc_errors():
                    await _write(call, self._first_message(time.monotonic()))
                    async for message in call:
                        event = self._state.on_message(message, time.monotonic())
                        if event is None:
                            continue
                        yield event
                        if self._state.pending_call is not None:
                            await self._answer(call, self._state.pending_call)
                        elif self._state.is_finished:
                            await call.done_writing()  # the server then ends the RPC
                self._state.check_finished()
                return
            except InferceptError as error:
                if self._closed.is_set():  # whatever the cancelled call reported, close() ended it
                    raise closed_error() from error
                backoff_s = self._backoff_s(error)
                if backoff_s is None:
                    raise
                with contextlib.suppress(asyncio.TimeoutError):  # the builtin one only from 3.11
                    await asyncio.wait_for(self._closed.wait(), timeout=backoff_s)
                if self._closed.is_set():
                    raise closed_error() from error
            finally:
                if not self._state.is_finished:
                    call.cancel()

    async def _answer(
        self, call: grpc.aio.StreamStreamCall[pb.ClientEvent, pb.ServerEvent], pending: PendingCall
    ) -> None:
        await _write(call, self._state.start_call(time.monotonic()))
        output = await self._run(pending)
        await _write(call, self._state.finish_call(output, time.monotonic()))

    async def _run(self, pending: PendingCall) -> object:
        if pending.script is not None:
            # A real wait of at least wait_s (the loop's timers may fire a hair early), which
            # close() cuts short.
            deadline_s = time.monotonic() + pending.script.wait_s
            while (remaining_s := deadline_s - time.monotonic()) > 0:
                with contextlib.suppress(asyncio.TimeoutError):  # the builtin one only from 3.11
                    await asyncio.wait_for(self._closed.wait(), timeout=remaining_s)
                if self._closed.is_set():
                    raise closed_error()
            if pending.tool is None:
                return pending.script.output
        tool = pending.tool
        assert tool is not None, "a pending call has a script entry or a tool"
        try:
            if tool.is_async:
                returned = tool.fn(pending.event.tool_input)
            else:
                returned = await asyncio.to_thread(tool.fn, pending.event.tool_input)
            # A plain function may still return an awaitable; await it here, on the loop.
            return await returned if inspect.isawaitable(returned) else returned
        except Exception as error:
            raise tool_failed(pending, error) from error


async def _write(
    call: grpc.aio.StreamStreamCall[pb.ClientEvent, pb.ServerEvent], message: pb.ClientEvent
) -> None:
    # The RPC may have ended while a tool ran (a deadline, the server gone); the next read
    # reports how, so a write to an ended call is dropped, as the sync client's outbox does.
    with contextlib.suppress(asyncio.InvalidStateError):
        await call.write(message)


class AsyncClient:
    """An asyncio client of an InferCept server::

        async with AsyncClient("127.0.0.1:50051") as client:
            result = await client.generate(prompt="2+2=", sampling=SamplingParams(max_tokens=8))

    The channel opens on first use, in the running event loop; use the client from that loop
    only. close() (or leaving the `async with` block) cancels every request still running."""

    @takes_fields_of(ClientConfig)
    def __init__(self, config: ClientConfig) -> None:
        """Arguments: the fields of ClientConfig, as Client's."""
        self.config = config
        self.address = config.address
        self.resume = config.resume
        self._channel: grpc.aio.Channel | None = None
        self._stub_: generation_pb2_grpc.GenerationAsyncStub | None = None
        self._streams: weakref.WeakSet[AsyncStream] = weakref.WeakSet()
        self._is_closed = False

    @takes_fields_of(RequestSpec)
    def generate(self, spec: RequestSpec) -> Coroutine[Any, Any, GenerateResult]:
        """Run one request to its end and return the result (await it); arguments: the fields of
        RequestSpec, as Client.generate. Tools may be sync (run via asyncio.to_thread) or async.
        Raises InferceptError."""
        return self._generate(spec)

    async def _generate(self, spec: RequestSpec) -> GenerateResult:
        stream = self._stream(spec)  # in the coroutine: a refusal is raised where it is awaited
        async for _ in stream:
            pass
        return stream.result

    @takes_fields_of(RequestSpec)
    def stream(self, spec: RequestSpec) -> AsyncStream:
        """Like generate(), but returns an AsyncStream of the request's events (sent when
        iterated); its `result` holds the GenerateResult once Finished has been yielded."""
        return self._stream(spec)

    def _stream(self, spec: RequestSpec) -> AsyncStream:
        stream = AsyncStream(self._stub(), SessionState(spec), spec.timeout_s, self.resume)
        self._streams.add(stream)
        return stream

    async def abort(self, request_id: str, *, timeout_s: float | None = None) -> None:
        """Abort a live request by id (its stream ends with finish_reason "abort").
        Raises InferceptError("NOT_FOUND") if the server has no such live request."""
        with translated_rpc_errors():
            await self._stub().Abort(pb.AbortRequest(request_id=request_id), timeout=timeout_s)

    async def server_info(self, *, timeout_s: float | None = None) -> ServerInfo:
        """Model, policy and capacity of the server."""
        with translated_rpc_errors():
            return ServerInfo.from_proto(
                await self._stub().GetServerInfo(pb.ServerInfoRequest(), timeout=timeout_s)
            )

    async def server_stats(self, *, timeout_s: float | None = None) -> dict[str, Any]:
        """Server-wide counters since start, as Client.server_stats."""
        with translated_rpc_errors():
            return message_to_dict(await self._stub().GetStats(pb.StatsRequest(), timeout=timeout_s))

    async def close(self) -> None:
        """Cancel the running requests and close the channel. Idempotent."""
        self._is_closed = True
        for stream in list(self._streams):
            stream.close()
        if self._channel is not None:
            await self._channel.close(None)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()

    def _stub(self) -> generation_pb2_grpc.GenerationAsyncStub:
        if self._is_closed:
            raise InferceptError(CANCELLED, "the client is closed")
        if self._stub_ is None:
            config = self.config
            self._channel = open_aio_channel(
                config.address, config.channel_options, config.credentials, config.token
            )
            # GenerationStub over an aio channel is the async stub (GenerationAsyncStub exists
            # only for type checkers).
            self._stub_ = generation_pb2_grpc.GenerationStub(self._channel)
        return self._stub_
