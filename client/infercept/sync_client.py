"""Client: the blocking client. Tools and scripted calls run on the caller's thread."""

from __future__ import annotations

import queue
import threading
import time
import weakref
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import grpc

from infercept.channel import open_channel
from infercept.errors import CANCELLED, InferceptError, closed_error, translated_rpc_errors
from infercept.events import Event
from infercept.result import GenerateResult
from infercept.resume import DEFAULT_RESUME, ResumePolicy
from infercept.server_info import ServerInfo, message_to_dict
from infercept.session import PendingCall, SessionState, StreamBase, tool_failed
from infercept.types import ClientConfig, RequestSpec, takes_fields_of
from infercept.v1 import generation_pb2 as pb
from infercept.v1 import generation_pb2_grpc


class Stream(StreamBase):
    """The events of one request as they arrive (Accepted, TokenDelta, Intercepted, Resumed,
    Finished), answering interceptions automatically: after yielding an Intercepted it runs the
    scripted wait or the tool, sends the result, and goes on.

    The request is sent when iteration starts; a Stream is iterated once. Leaving the iteration
    before Finished (break, an exception) or calling close() — from any thread — cancels the RPC,
    and the server aborts the request. Errors are raised as InferceptError."""

    def __init__(
        self,
        stub: generation_pb2_grpc.GenerationStub,
        state: SessionState,
        timeout_s: float | None,
        resume: ResumePolicy = DEFAULT_RESUME,
    ):
        super().__init__(state, timeout_s, resume)
        self._stub = stub
        # The request iterator gRPC consumes on its own thread; None ends it (half-close).
        self._outbox: queue.SimpleQueue[pb.ClientEvent | None] = queue.SimpleQueue()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._call: grpc.CallIterator[pb.ServerEvent] | None = None
        self._is_started = False

    def close(self) -> None:
        """Cancel the request unless it has finished. Safe from any thread, and idempotent."""
        with self._lock:
            self._closed.set()
            self._outbox.put(None)
            if self._call is not None and not self._state.is_finished:
                self._call.cancel()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Event]:
        self._claim()
        while True:
            call = self._open()
            try:
                with translated_rpc_errors():
                    for message in call:
                        event = self._state.on_message(message, time.monotonic())
                        if event is None:
                            continue
                        yield event
                        if self._state.pending_call is not None:
                            self._answer(self._state.pending_call)
                        elif self._state.is_finished:
                            self._outbox.put(None)  # half-close; the server then ends the RPC
                self._state.check_finished()
                return
            except InferceptError as error:
                if self._closed.is_set():  # whatever the cancelled call reported, close() ended it
                    raise closed_error() from error
                backoff_s = self._backoff_s(error)
                if backoff_s is None:
                    raise
                if self._closed.wait(backoff_s):
                    raise closed_error() from error
            finally:
                self._outbox.put(None)  # gRPC's sending thread waits on the outbox until this
                if not self._state.is_finished:
                    call.cancel()

    def _claim(self) -> None:
        with self._lock:
            if self._is_started:
                raise RuntimeError("a Stream can be iterated only once")
            if self._closed.is_set():
                raise closed_error()
            self._is_started = True
            self._start_deadline(time.monotonic())

    def _open(self) -> grpc.CallIterator[pb.ServerEvent]:
        """A new Session call: the request, or its resumption."""
        with self._lock:
            if self._closed.is_set():
                raise closed_error()
            self._outbox = queue.SimpleQueue()
            self._outbox.put(self._first_message(time.monotonic()))
            timeout_s = self._call_timeout_s(time.monotonic())
            self._call = self._stub.Session(iter(self._outbox.get, None), timeout=timeout_s)
            return self._call

    def _answer(self, call: PendingCall) -> None:
        self._outbox.put(self._state.start_call(time.monotonic()))
        output = self._run(call)
        self._outbox.put(self._state.finish_call(output, time.monotonic()))

    def _run(self, call: PendingCall) -> object:
        if call.script is not None:
            # A real wait of at least wait_s, which close() cuts short.
            deadline_s = time.monotonic() + call.script.wait_s
            while (remaining_s := deadline_s - time.monotonic()) > 0:
                if self._closed.wait(remaining_s):
                    raise closed_error()
            if call.tool is None:
                return call.script.output
        assert call.tool is not None, "a pending call has a script entry or a tool"
        try:
            return call.tool.fn(call.event.tool_input)
        except Exception as error:
            raise tool_failed(call, error) from error


class Client:
    """A blocking client of an InferCept server::

        with Client("127.0.0.1:50051") as client:
            result = client.generate(prompt_token_ids=[1, 2, 3], sampling=SamplingParams(max_tokens=8))

    Thread-safe: requests may run concurrently from several threads. close() (or leaving the
    `with` block) cancels every request still running; the server aborts them."""

    @takes_fields_of(ClientConfig)
    def __init__(self, config: ClientConfig) -> None:
        """Arguments: the fields of ClientConfig (address, then options, root_certificates, token,
        resume by keyword)."""
        self.config = config
        self.address = config.address
        self.resume = config.resume
        self._channel = open_channel(config.address, config.channel_options, config.credentials, config.token)
        self._stub = generation_pb2_grpc.GenerationStub(self._channel)
        self._streams: weakref.WeakSet[Stream] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._is_closed = False

    @takes_fields_of(RequestSpec)
    def generate(self, spec: RequestSpec) -> GenerateResult:
        """Run one request to its end, answering its interceptions, and return the result.
        Arguments: the fields of RequestSpec (prompt, then prompt_token_ids, messages, sampling,
        tools, script, program_id, timeout_s by keyword). Raises InferceptError."""
        stream = self._stream(spec)
        for _ in stream:
            pass
        return stream.result

    @takes_fields_of(RequestSpec)
    def stream(self, spec: RequestSpec) -> Stream:
        """Like generate(), but returns a Stream of the request's events (sent when iterated);
        its `result` holds the GenerateResult once Finished has been yielded. Raises TypeError
        for an async tool (they need AsyncClient)."""
        return self._stream(spec)

    def _stream(self, spec: RequestSpec) -> Stream:
        for tool in spec.tools:
            if tool.is_async:
                raise TypeError(f"tool {tool.name!r} is async; async tools need AsyncClient")
        stream = Stream(self._stub, SessionState(spec), spec.timeout_s, self.resume)
        with self._lock:
            if self._is_closed:
                raise InferceptError(CANCELLED, "the client is closed")
            self._streams.add(stream)
        return stream

    def abort(self, request_id: str, *, timeout_s: float | None = None) -> None:
        """Abort a live request by id (its stream ends with finish_reason "abort").
        Raises InferceptError("NOT_FOUND") if the server has no such live request."""
        with translated_rpc_errors():
            self._stub.Abort(pb.AbortRequest(request_id=request_id), timeout=timeout_s)

    def server_info(self, *, timeout_s: float | None = None) -> ServerInfo:
        """Model, policy and capacity of the server."""
        with translated_rpc_errors():
            return ServerInfo.from_proto(self._stub.GetServerInfo(pb.ServerInfoRequest(), timeout=timeout_s))

    def server_stats(self, *, timeout_s: float | None = None) -> dict[str, Any]:
        """Server-wide counters since start, by their names in the Stats message (maps as
        dicts), e.g. device_blocks_free, device_blocks_total, host_blocks_free, host_blocks_total."""
        with translated_rpc_errors():
            return message_to_dict(self._stub.GetStats(pb.StatsRequest(), timeout=timeout_s))

    def close(self) -> None:
        """Cancel the running requests and close the channel. Idempotent."""
        with self._lock:
            self._is_closed = True
            streams = list(self._streams)
        for stream in streams:
            stream.close()
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
