"""One gRPC Session stream that serves a conversation across HTTP turns.

The gateway holds the stream open while the request is intercepted on the server: an HTTP turn
reads events until Intercepted (the turn ends in a tool call) or Finished; a later turn that
continues the conversation sends the new tokens as the ToolResult and reads on. Closing the
stream makes the server abort the request and free its KV.

    session = await GrpcSession.open(stub, request, event_timeout_s)
    async for event in session.turn_events(): ...     # ... up to Intercepted or Finished
    await session.resume(suffix_token_ids)           # the tool's result: the next turn
    async for event in session.turn_events(): ...
    session.close()
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import grpc
import grpc.aio

from infercept.errors import PROTOCOL_ERROR, InferceptError
from infercept.events import Event, Finished, Intercepted, TokenDelta, event_from_proto
from infercept.v1 import generation_pb2 as pb
from infercept.v1 import generation_pb2_grpc

# What the reader puts in the queue when the stream has ended without an error.
_END = None


class GrpcSession:
    """A live Session stream. `context_token_ids` is every token in the request's context so far
    (prompt, generated, returned), kept in step with the server's."""

    def __init__(
        self,
        call: grpc.aio.StreamStreamCall[pb.ClientEvent, pb.ServerEvent],
        prompt_token_ids: list[int],
        event_timeout_s: float,
    ) -> None:
        self._call = call
        self._queue: asyncio.Queue[Event | InferceptError | None] = asyncio.Queue()
        self._event_timeout_s = event_timeout_s
        self.context_token_ids = list(prompt_token_ids)
        self.is_ended = False  # the stream ended (finished, failed, or closed)
        self.on_end: Callable[[GrpcSession], None] | None = None
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def open(
        cls,
        stub: generation_pb2_grpc.GenerationAsyncStub,
        request: pb.GenerateRequest,
        event_timeout_s: float,
    ) -> GrpcSession:
        """Start the stream and send the GenerateRequest (its prompt must be token ids)."""
        call = stub.Session(None)
        session = cls(call, list(request.prompt_token_ids), event_timeout_s)
        await session._write(pb.ClientEvent(generate=request))
        return session

    async def turn_events(self) -> AsyncIterator[Event]:
        """The server's events up to and including the next Intercepted or Finished. Raises
        InferceptError for a failed stream, or DEADLINE_EXCEEDED if no event comes within the
        event timeout."""
        while True:
            try:
                item = await asyncio.wait_for(self._queue.get(), timeout=self._event_timeout_s)
            except TimeoutError as error:
                self.close()
                raise InferceptError(
                    "DEADLINE_EXCEEDED", f"no event from the scheduler within {self._event_timeout_s:g}s"
                ) from error
            if isinstance(item, InferceptError):
                raise item
            if item is _END:
                raise InferceptError(PROTOCOL_ERROR, "the scheduler ended the stream without Finished")
            if isinstance(item, TokenDelta):
                self.context_token_ids.extend(item.token_ids)
            yield item
            if isinstance(item, Intercepted | Finished):
                return

    async def resume(self, token_ids: list[int]) -> None:
        """Answer the pending interception with `token_ids` (appended to the context)."""
        self.context_token_ids.extend(token_ids)
        await self._write(pb.ClientEvent(tool_result=pb.ToolResult(token_ids=token_ids)))

    def close(self) -> None:
        """End the stream; the server aborts the request if it has not finished. Idempotent."""
        self._call.cancel()
        self._mark_ended()

    async def _write(self, message: pb.ClientEvent) -> None:
        # A write to a stream that already ended (or never connected) is dropped: the reader
        # reports how it ended.
        with contextlib.suppress(asyncio.InvalidStateError, grpc.RpcError):
            await self._call.write(message)

    async def _read(self) -> None:
        try:
            async for message in self._call:
                event = event_from_proto(message)
                if event is not None:
                    self._queue.put_nowait(event)
                    if isinstance(event, Finished) and not self.is_ended:
                        # The server then ends the RPC. A close() racing this half-close makes it
                        # fail; the stream is over either way.
                        with contextlib.suppress(Exception):
                            await self._call.done_writing()
            self._queue.put_nowait(_END)
        except grpc.RpcError as error:
            self._queue.put_nowait(InferceptError.from_rpc_error(error))
        except asyncio.CancelledError:
            self._queue.put_nowait(InferceptError("CANCELLED", "the session was closed"))
            if not self._call.cancelled():  # this task was cancelled, not the call: pass it on
                raise
        finally:
            self._mark_ended()

    def _mark_ended(self) -> None:
        if not self.is_ended:
            self.is_ended = True
            if self.on_end is not None:
                self.on_end(self)
