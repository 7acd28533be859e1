"""The public Generation service: a thin edge between client sessions and the step loop.

A request's errors become gRPC statuses here; the loop and the other requests carry on. Whatever
way a session's stream ends (finished, refused, garbage from the client, cancelled), its request
is aborted and its blocks and live slot are freed. Texts are measured, then tokenized in a worker
thread, so that no client can stall the event loop that every other session and the step loop
share.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import grpc
import structlog
from google.protobuf.message import DecodeError

from infercept.v1 import generation_pb2 as gen
from infercept.v1 import generation_pb2_grpc
from scheduler_svc import __version__
from scheduler_svc.admission import RequestError, check_text_size, encode
from scheduler_svc.event_render import render
from scheduler_svc.events import Finished
from scheduler_svc.metrics import SchedulerMetrics
from scheduler_svc.request_ids import PublicIds
from scheduler_svc.stats_render import stats_proto
from scheduler_svc.step_loop import SessionItem, StepLoop
from svc_common.auth import Authenticator, caller_identity

log = structlog.get_logger(__name__)


def _status(error: RequestError) -> grpc.StatusCode:
    return grpc.StatusCode[error.code]


async def _refuse(context: grpc.aio.ServicerContext, error: RequestError) -> None:
    """End the RPC with the error's status; a temporary refusal carries its retry hint both as
    trailing metadata `retry-after-ms` and in the message."""
    if error.retry_after_s is not None:
        context.set_trailing_metadata((("retry-after-ms", str(max(round(error.retry_after_s * 1000), 1))),))
    await context.abort(_status(error), error.message)


def _undecodable(error: DecodeError) -> RequestError:
    return RequestError("INVALID_ARGUMENT", f"the message could not be decoded: {error}")


class GenerationServicer(generation_pb2_grpc.GenerationServicer):
    def __init__(
        self,
        loop: StepLoop,
        info: gen.ServerInfo,
        authenticator: Authenticator | None = None,
        metrics: SchedulerMetrics | None = None,
    ) -> None:
        self._loop = loop
        self._info = info
        self._metrics = metrics or SchedulerMetrics()
        # Who calls (the token's name) owns what it creates; clients see only public ids.
        self._authenticator = authenticator or Authenticator({})
        self._public_ids = PublicIds()

    async def Session(
        self, request_iterator: AsyncIterator[gen.ClientEvent], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[gen.ServerEvent]:
        timer = self._metrics.request_timer(time.monotonic())
        try:
            first = await anext(aiter(request_iterator), None)
        except DecodeError as error:
            await _refuse(context, _undecodable(error))
            return
        if first is not None and first.WhichOneof("event") is None:  # e.g. a field of the wrong wire type
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the message sets no event")
            return
        if first is None or first.WhichOneof("event") != "generate":
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, "a session must start with a GenerateRequest"
            )
            return
        try:
            self._loop.check_capacity()  # refuse fast, before any tokenizing
            await self._tokenize_prompt(first.generate)
            request_id, queue = self._loop.submit(first.generate)
        except RequestError as error:
            log.info("request.refused", code=error.code, reason=error.message)
            await _refuse(context, error)
            return
        public_id = self._public_ids.add(request_id, caller_identity(self._authenticator, context))
        with structlog.contextvars.bound_contextvars(request_id=request_id):
            log.info("request.accepted", program_id=first.generate.program_id or None)
            reader = asyncio.create_task(self._read_client(request_iterator, request_id, queue))
            try:
                async for event in self._events(queue, context):
                    if event.HasField("accepted"):  # the client knows the request by its public id
                        event.accepted.request_id = public_id
                    timer.on_event(event, time.monotonic())
                    yield event
            finally:
                self._public_ids.remove(public_id)
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
                self._loop.close_session(request_id)

    async def _events(
        self, queue: asyncio.Queue[SessionItem], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[gen.ServerEvent]:
        while True:
            item = await queue.get()
            if isinstance(item, RequestError):
                await _refuse(context, item)
                return
            yield render(item)
            if isinstance(item, Finished):
                log.info("request.finished", reason=item.reason.value)
                return

    async def _read_client(
        self,
        request_iterator: AsyncIterator[gen.ClientEvent],
        request_id: int,
        queue: asyncio.Queue[SessionItem],
    ) -> None:
        """Apply the client's later events; a bad one ends the session with its status."""
        try:
            async for event in request_iterator:
                kind = event.WhichOneof("event")
                if kind == "generate":
                    raise RequestError("FAILED_PRECONDITION", "one request per session: open a new stream")
                if kind == "tool_started":
                    self._loop.tool_started(request_id, event.tool_started.expected_duration_s)
                elif kind == "tool_result":
                    result = event.tool_result
                    ids = list(result.token_ids)
                    if not ids and result.text:  # an empty result returns nothing
                        text = self._loop.core.tool_result_text(request_id, result.text)
                        ids = await self._tokenize(text, "the tool result")
                    self._loop.resume(request_id, ids)
            # The client will send nothing more: a paused request could never resume.
            if self._loop.is_paused(request_id):
                raise RequestError(
                    "FAILED_PRECONDITION", "the client closed its side while a tool result is pending"
                )
        except RequestError as error:
            log.info("request.refused_input", code=error.code, reason=error.message)
            queue.put_nowait(error)
        except DecodeError as error:  # garbage from the client: the session ends, its request is freed
            log.info("request.undecodable_input", reason=str(error))
            queue.put_nowait(_undecodable(error))
        except Exception as error:  # never a session left waiting: it ends, its request is freed
            log.exception("request.reader_failed")
            queue.put_nowait(RequestError("INTERNAL", f"reading the client's events failed: {error!r}"))

    async def _tokenize_prompt(self, proto: gen.GenerateRequest) -> None:
        """Replace a text prompt by its token ids (in place), tokenized off the event loop."""
        if proto.prompt and not proto.prompt_token_ids:  # both: admit refuses it
            ids = await self._tokenize(proto.prompt, "the prompt")
            proto.ClearField("prompt")
            proto.prompt_token_ids.extend(ids)

    async def _tokenize(self, text: str, what: str) -> list[int]:
        """`text`'s token ids, after a size check (OUT_OF_RANGE), computed in a worker thread."""
        core = self._loop.core
        check_text_size(text, core.executor.max_model_len, what)
        return await asyncio.to_thread(encode, core.tokenizer, text, what)

    async def Abort(self, request: gen.AbortRequest, context: grpc.aio.ServicerContext) -> gen.AbortResponse:
        try:
            caller = caller_identity(self._authenticator, context)
            self._loop.abort(self._public_ids.resolve(request.request_id, caller))
        except RequestError as error:
            await context.abort(_status(error), error.message)
        return gen.AbortResponse()

    async def GetServerInfo(
        self, request: gen.ServerInfoRequest, context: grpc.aio.ServicerContext
    ) -> gen.ServerInfo:
        return self._info

    async def GetStats(self, request: gen.StatsRequest, context: grpc.aio.ServicerContext) -> gen.Stats:
        return stats_proto(self._loop.core)


def server_info(loop: StepLoop, version: str = __version__) -> gen.ServerInfo:
    core = loop.core
    e = core.executor
    return gen.ServerInfo(
        model=e.model,
        vocab_size=e.vocab_size,
        max_model_len=e.max_model_len,
        eos_token_ids=list(e.eos_token_ids),
        policy=core.policy.name,
        block_size_tokens=e.block_size,
        num_device_blocks=e.num_device_blocks,
        num_host_blocks=e.num_host_blocks,
        max_batched_tokens=core.config.max_batched_tokens,
        version=version,
        device=e.device,
        dtype=e.dtype,
    )
