"""The HTTP application: OpenAI's /v1/models, /v1/chat/completions, /v1/completions, a health
endpoint and /v1/infercept/stats, over the scheduler's gRPC API.

    app = create_app(GatewayConfig(scheduler_address="127.0.0.1:50051"))
    uvicorn.run(app, host="127.0.0.1", port=8000)

At start-up the gateway asks the scheduler for its model, tokenizer and chat template (waiting up
to scheduler_timeout_s); it renders and tokenizes prompts itself and sends token ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.chat_template import ChatTemplateError
from gateway.config import GatewayConfig
from gateway.errors import GatewayError, bad_request
from gateway.model_assets import ModelAssets
from gateway.openai_schema import (
    ChatCompletionRequest,
    CompletionRequest,
    SamplingFields,
    check_tools,
    normalized_messages,
    parse,
    tool_mode,
)
from gateway.pauses import PauseTable
from gateway.responses import (
    assistant_message,
    chat_chunk,
    chat_completion,
    completion,
    completion_chunk,
    new_response_id,
    turn_report,
    usage,
)
from gateway.turns import GenerationSettings, TextPiece, Turn, TurnEnd, TurnRunner, TurnSpec
from infercept.async_client import AsyncClient
from infercept.channel import channel_options, open_aio_channel
from infercept.errors import InferceptError
from infercept.tls import channel_credentials
from infercept.v1 import generation_pb2_grpc


@dataclasses.dataclass
class GatewayState:
    """What the routes share once the gateway has started."""

    config: GatewayConfig
    assets: ModelAssets
    runner: TurnRunner
    client: AsyncClient  # for GetStats

    def stats(self) -> dict[str, Any]:
        counters = self.runner.counters
        return {
            "resumed_turns": counters.num_resumed_turns,
            "fresh_turns": counters.num_fresh_turns,
            "expired_pauses": self.runner.pauses.num_expired,
            "paused_turns": len(self.runner.pauses),
            "resume_enabled": self.config.is_resume_enabled,
        }


def create_app(config: GatewayConfig) -> FastAPI:
    """The ASGI application; it connects to the scheduler when it starts (lifespan)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = AsyncClient(
            config.scheduler_address,
            root_certificates=config.scheduler_root_certificates,
            token=config.scheduler_token,
        )
        roots = config.scheduler_root_certificates
        channel = open_aio_channel(
            config.scheduler_address,
            channel_options(),
            channel_credentials(roots) if roots is not None else None,
            config.scheduler_token,
        )
        pauses = PauseTable(config.pause_ttl_s)
        sweeper: asyncio.Task[None] | None = None
        try:
            info = await _server_info(client, config.scheduler_timeout_s)
            assets = ModelAssets.from_server_info(info, config.model_name, config.chat_template)
            runner = TurnRunner(
                generation_pb2_grpc.GenerationStub(channel),
                assets,
                pauses,
                is_resume_enabled=config.is_resume_enabled,
                event_timeout_s=config.event_timeout_s,
            )
            app.state.gateway = GatewayState(config, assets, runner, client)
            sweeper = asyncio.create_task(_sweep(pauses, config.sweep_interval_s))
            yield
        finally:
            if sweeper is not None:
                sweeper.cancel()
            pauses.close_all()
            await client.close()
            await channel.close(None)

    app = FastAPI(title="InferCept gateway", lifespan=lifespan)

    @app.exception_handler(GatewayError)
    async def _gateway_error(request: Request, error: GatewayError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        # Unknown paths and methods, in OpenAI's shape too.
        body = GatewayError(error.status_code, str(error.detail)).body()
        return JSONResponse(body, status_code=error.status_code)

    @app.get("/health")
    async def health(request: Request) -> dict[str, str]:
        return {"status": "ok", "model": _state(request).assets.name}

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        name = _state(request).assets.name
        return {
            "object": "list",
            "data": [{"id": name, "object": "model", "created": 0, "owned_by": "infercept"}],
        }

    @app.get("/v1/infercept/stats")
    async def stats(request: Request) -> dict[str, Any]:
        """The gateway's counters (resumed and fresh turns, expired pauses) and the scheduler's."""
        state = _state(request)
        try:
            server = await state.client.server_stats(timeout_s=10.0)
        except InferceptError as error:
            raise GatewayError.from_infercept(error) from error
        return {"gateway": state.stats(), "scheduler": server}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> JSONResponse | StreamingResponse:
        state = _state(request)
        body = parse(ChatCompletionRequest, await _json_body(request))
        _check_model(state, body)
        check_tools(body.tools)
        messages = normalized_messages(body.messages)
        try:
            prompt = state.assets.encode_conversation(messages, body.tools)
        except ChatTemplateError as error:
            raise bad_request(str(error), param="messages") from error
        spec = TurnSpec(tuple(prompt), _settings(body, tool_mode(body), body.tools), body.turn_max_tokens)
        turn = await state.runner.start(spec)
        response_id = new_response_id("chatcmpl")
        with_ids = body.infercept.return_token_ids
        if body.stream:
            include_usage = body.stream_options is not None and body.stream_options.include_usage
            chunks = _chat_chunks(turn, response_id, state.assets.name, include_usage, with_ids)
            return _sse(chunks)
        end = await _run_to_end(turn)
        return JSONResponse(chat_completion(response_id, state.assets.name, end, with_token_ids=with_ids))

    @app.post("/v1/completions", response_model=None)
    async def completions(request: Request) -> JSONResponse | StreamingResponse:
        state = _state(request)
        body = parse(CompletionRequest, await _json_body(request))
        _check_model(state, body)
        prompt = state.assets.encode(body.prompt) if isinstance(body.prompt, str) else body.prompt
        turn = await state.runner.start(TurnSpec(tuple(prompt), _settings(body, "none"), body.max_tokens))
        response_id = new_response_id("cmpl")
        if body.stream:
            return _sse(_completion_chunks(turn, response_id, state.assets.name))
        end = await _run_to_end(turn)
        return JSONResponse(completion(response_id, state.assets.name, end))

    return app


def _state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


async def _json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise bad_request(f"the request body is not valid JSON: {error}", code="invalid_json") from error


def _check_model(state: GatewayState, body: SamplingFields) -> None:
    if body.model != state.assets.name:
        raise GatewayError(
            404,
            f"the model {body.model!r} does not exist; this gateway serves {state.assets.name!r}",
            param="model",
            code="model_not_found",
        )


def _settings(
    body: SamplingFields, mode: str, tools: list[dict[str, Any]] | None = None
) -> GenerationSettings:
    return GenerationSettings(
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=body.stop_strings,
        ignore_eos=body.infercept.ignore_eos,
        tool_mode="auto" if mode == "auto" else "none",
        script=body.infercept.script,
        tool_schemas_json=tuple(json.dumps(tool, ensure_ascii=False) for tool in tools or ()),
    )


async def _run_to_end(turn: Turn) -> TurnEnd:
    async for piece in turn.pieces():
        if isinstance(piece, TurnEnd):
            return piece
    raise AssertionError("a turn ends with a TurnEnd")


def _sse(chunks: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    async def lines() -> AsyncIterator[str]:
        try:
            async for chunk in chunks:
                yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
        except GatewayError as error:  # the status line is gone: the error travels as an event
            yield f"data: {json.dumps(error.body())}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(lines(), media_type="text/event-stream")


async def _chat_chunks(
    turn: Turn, response_id: str, model: str, include_usage: bool, with_token_ids: bool
) -> AsyncIterator[dict[str, Any]]:
    yield chat_chunk(response_id, model, {"role": "assistant", "content": ""})
    async for piece in turn.pieces():
        if isinstance(piece, TextPiece):
            yield chat_chunk(response_id, model, {"content": piece.text})
            continue
        delta: dict[str, Any] = {}
        if piece.tool_call is not None:
            delta["tool_calls"] = [{"index": 0, **piece.tool_call.to_openai()}]
        if with_token_ids:
            delta["infercept"] = assistant_message(piece, with_token_ids=True)["infercept"]
        last = chat_chunk(response_id, model, delta, piece.finish_reason)
        last["infercept"] = turn_report(piece)
        yield last
        if include_usage:
            yield {**chat_chunk(response_id, model, {}), "choices": [], "usage": usage(piece)}


async def _completion_chunks(turn: Turn, response_id: str, model: str) -> AsyncIterator[dict[str, Any]]:
    async for piece in turn.pieces():
        if isinstance(piece, TextPiece):
            yield completion_chunk(response_id, model, piece.text)
        else:
            yield completion_chunk(response_id, model, "", piece.finish_reason)


async def _server_info(client: AsyncClient, timeout_s: float) -> Any:
    """The scheduler's ServerInfo, retried until it answers or timeout_s has passed."""
    deadline_s = time.monotonic() + timeout_s
    while True:
        try:
            return await client.server_info(timeout_s=5.0)
        except InferceptError:
            if time.monotonic() >= deadline_s:
                raise
            await asyncio.sleep(0.5)


async def _sweep(pauses: PauseTable, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        pauses.release_expired()
