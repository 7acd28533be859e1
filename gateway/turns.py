"""One HTTP turn of a conversation: resume a paused request or start a fresh one, read the
scheduler's events up to a tool call or the end, and keep the request paused for the follow-up.

    turn = await runner.start(spec)          # resumes when the prompt extends a paused context
    async for piece in turn.pieces():        # TextPiece ... then one TurnEnd
        ...

A turn that ends in a tool call leaves its gRPC session open and its request intercepted on the
server (the scheduling policy keeps, swaps or drops the paused context as for any pause); the
session joins the PauseTable under the turn's generation settings. The follow-up's new tokens
(the suffix of its prompt past the paused context) are sent as the tool result: nothing is
prefilled again. With resume disabled every turn starts fresh and a tool call closes the session.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

from gateway.errors import GatewayError
from gateway.grpc_session import GrpcSession
from gateway.holdback import releasable_length
from gateway.model_assets import ModelAssets
from gateway.openai_schema import ScriptEntry, ToolMode
from gateway.pauses import PauseTable
from gateway.tool_calls import OPENING_TAG, ToolCall, from_interception
from infercept.errors import InferceptError
from infercept.events import Finished, Intercepted, Resumed, TokenDelta
from infercept.types import RequestSpec, SamplingParams, ScriptedCall
from infercept.v1 import generation_pb2 as pb
from infercept.v1 import generation_pb2_grpc

# Scheduler finish reasons as OpenAI's.
_FINISH_REASONS = {"length": "length", "max_model_len": "length", "eos": "stop", "stop": "stop"}


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
    """What a request generates with. A follow-up resumes a paused turn only with equal settings,
    since the server's request keeps the ones it started with."""

    temperature: float
    top_p: float
    seed: int | None
    stop: tuple[str, ...]
    ignore_eos: bool
    tool_mode: ToolMode
    # Scripted interceptions still to come: this turn's first.
    script: tuple[ScriptEntry, ...]
    # The request's tools as JSON schemas (with tool_mode "auto"): the scheduler then intercepts
    # the model's <tool_call> calls itself and reports each under its function's name.
    tool_schemas_json: tuple[str, ...] = ()

    @property
    def can_pause(self) -> bool:
        return self.tool_mode == "auto" or bool(self.script)


@dataclasses.dataclass(frozen=True)
class TurnSpec:
    prompt_token_ids: tuple[int, ...]
    settings: GenerationSettings
    max_tokens: int | None  # this turn's most generated tokens; None: up to the model's length


@dataclasses.dataclass(frozen=True)
class TextPiece:
    text: str  # content the client may see now


@dataclasses.dataclass(frozen=True)
class TurnEnd:
    finish_reason: str  # OpenAI's: "stop", "length", "tool_calls"
    content: str  # the assistant's text (before the tool call, if one)
    tool_call: ToolCall | None
    token_ids: tuple[int, ...]  # generated in this turn
    num_prompt_tokens: int
    # Prompt tokens already in the paused context this turn resumed (0 for a fresh turn).
    num_cached_tokens: int
    # What the server did with the paused context: its first action at the pause ("preserve",
    # "swap", "discard") and, on resume, how it fared.
    context_action: str = ""
    resumed: Resumed | None = None


@dataclasses.dataclass
class TurnCounters:
    num_resumed_turns: int = 0
    num_fresh_turns: int = 0


class TurnRunner:
    def __init__(
        self,
        stub: generation_pb2_grpc.GenerationAsyncStub,
        assets: ModelAssets,
        pauses: PauseTable,
        *,
        is_resume_enabled: bool,
        event_timeout_s: float,
    ) -> None:
        self._stub = stub
        self.assets = assets
        self.pauses = pauses
        self.is_resume_enabled = is_resume_enabled
        self._event_timeout_s = event_timeout_s
        self.counters = TurnCounters()

    async def start(self, spec: TurnSpec) -> Turn:
        """Resume the paused turn `spec` continues, or open a fresh request. Raises GatewayError
        if the scheduler refuses it."""
        prompt = list(spec.prompt_token_ids)
        paused = self.pauses.take(prompt, spec.settings) if self.is_resume_enabled else None
        if paused is not None:
            self.counters.num_resumed_turns += 1
            num_cached = len(paused.session.context_token_ids)
            await paused.session.resume(prompt[num_cached:])
            return Turn(self, paused.session, spec, num_cached)
        self.counters.num_fresh_turns += 1
        with _translated():
            session = await GrpcSession.open(self._stub, self._request(spec), self._event_timeout_s)
        turn = Turn(self, session, spec, 0)
        await turn.wait_accepted()
        return turn

    def _request(self, spec: TurnSpec) -> pb.GenerateRequest:
        s = spec.settings
        # A request that may pause serves later turns too: its budget is the model's length, and
        # each turn's own max_tokens is enforced here.
        max_tokens = (
            spec.max_tokens if spec.max_tokens is not None and not s.can_pause else self.assets.max_model_len
        )
        sampling = SamplingParams(
            max_tokens=max_tokens,
            temperature=s.temperature,
            top_p=s.top_p,
            seed=s.seed,
            stop=s.stop,
            ignore_eos=s.ignore_eos,
        )
        # A script entry's expected duration is the hint a ScriptedCall sends as its wait_s.
        script = [ScriptedCall(e.after_tokens, e.tool, wait_s=e.expected_duration_s) for e in s.script]
        request = RequestSpec(
            prompt_token_ids=spec.prompt_token_ids, sampling=sampling, script=script
        ).to_proto()
        if s.tool_mode == "auto":
            # The client's tools as the HTTP body gave them: schemas without a function to run here.
            request.tool_schemas_json.extend(s.tool_schemas_json)
        return request


class Turn:
    """The events of one turn as TextPieces and a final TurnEnd (see the module docstring)."""

    def __init__(
        self, runner: TurnRunner, session: GrpcSession, spec: TurnSpec, num_cached_tokens: int
    ) -> None:
        self._runner = runner
        self._session = session
        self._events = session.turn_events()
        self._spec = spec
        self._num_cached_tokens = num_cached_tokens
        markers = spec.settings.stop + ((OPENING_TAG,) if spec.settings.tool_mode == "auto" else ())
        self._markers = tuple(m for m in markers if m)
        self._token_ids: list[int] = []
        self._text = ""
        self._num_released = 0  # characters of _text sent as TextPieces
        self._has_ended = False  # the TurnEnd is built: the session is paused or closed

    @property
    def _is_past_last_call(self) -> bool:
        """A resumed request that can no longer pause: its budget is the model's length, so
        the turn's max_tokens is the gateway's to enforce."""
        return self._num_cached_tokens > 0 and not self._spec.settings.can_pause

    async def wait_accepted(self) -> None:
        """Wait for the scheduler to accept a fresh request, so that a refusal becomes the HTTP
        status before any response is sent. Raises GatewayError."""
        try:
            with _translated():
                await anext(self._events)  # Accepted, or the stream's error
        except BaseException:
            self._session.close()
            raise

    async def pieces(self) -> AsyncIterator[TextPiece | TurnEnd]:
        """TextPieces as the text becomes safe to show, then the TurnEnd. Raises GatewayError."""
        limit = self._spec.max_tokens
        resumed: Resumed | None = None
        try:
            with _translated():
                async for event in self._events:
                    if isinstance(event, Resumed):
                        resumed = event
                    elif isinstance(event, TokenDelta):
                        if limit is not None and len(self._token_ids) + len(event.token_ids) > limit:
                            # A request that may pause generates past this turn's max_tokens.
                            self._token_ids += event.token_ids[: limit - len(self._token_ids)]
                            self._text = self._runner.assets.decode(self._token_ids)
                            self._session.close()
                            for item in self._text_end("length", resumed):
                                yield item
                            return
                        self._token_ids += event.token_ids
                        self._text += event.text
                        end = releasable_length(self._text, self._markers)
                        if end > self._num_released:
                            yield TextPiece(self._text[self._num_released : end])
                            self._num_released = end
                        if len(self._token_ids) == limit and self._is_past_last_call:
                            # No call can end this turn now: cut it here rather than one token on.
                            self._session.close()
                            for item in self._text_end("length", resumed):
                                yield item
                            return
                    elif isinstance(event, Intercepted):
                        for item in self._call_end(event, resumed):
                            yield item
                        return
                    elif isinstance(event, Finished):
                        if event.finish_reason == "abort":
                            raise GatewayError(503, "the scheduler aborted the request", type_="server_error")
                        for item in self._text_end(_FINISH_REASONS.get(event.finish_reason, "stop"), resumed):
                            yield item
                        return
        except BaseException:
            # An error, or the HTTP client gone mid-turn (GeneratorExit); not the caller
            # leaving after the TurnEnd, which must not close a paused session.
            if not self._has_ended:
                self._session.close()
            raise

    def _text_end(self, finish_reason: str, resumed: Resumed | None) -> list[TextPiece | TurnEnd]:
        content = self._text
        for stop in self._spec.settings.stop:
            found = content.find(stop) if stop else -1
            if found != -1:
                content = content[:found]
        return self._end(finish_reason, content, None, "", resumed)

    def _call_end(self, event: Intercepted, resumed: Resumed | None) -> list[TextPiece | TurnEnd]:
        settings = self._spec.settings
        call = from_interception(event)
        if event.arguments:  # the model wrote it: a scripted interception has no arguments
            marker_at = self._text.rfind(OPENING_TAG)
            content = self._text[:marker_at] if marker_at != -1 else self._text
            next_settings = settings
        else:
            content = self._text
            next_settings = dataclasses.replace(settings, script=settings.script[1:])
        # The table matches follow-ups against context_token_ids: it must be the server's context.
        is_in_step = len(self._session.context_token_ids) == event.num_context_tokens
        if self._runner.is_resume_enabled and is_in_step:
            self._runner.pauses.add(self._session, next_settings)
        else:
            self._session.close()
        return self._end("tool_calls", content, call, event.context_action, resumed)

    def _end(
        self,
        finish_reason: str,
        content: str,
        call: ToolCall | None,
        context_action: str,
        resumed: Resumed | None,
    ) -> list[TextPiece | TurnEnd]:
        self._has_ended = True
        pieces: list[TextPiece | TurnEnd] = []
        if len(content) > self._num_released:
            pieces.append(TextPiece(content[self._num_released :]))
        end = TurnEnd(
            finish_reason=finish_reason,
            content=content,
            tool_call=call,
            token_ids=tuple(self._token_ids),
            num_prompt_tokens=len(self._spec.prompt_token_ids),
            num_cached_tokens=self._num_cached_tokens,
            context_action=context_action,
            resumed=resumed,
        )
        return [*pieces, end]


class _translated:
    """Raise InferceptErrors inside the block as GatewayErrors (their HTTP statuses)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: BaseException | None, traceback: object) -> None:
        if isinstance(exc, InferceptError):
            raise GatewayError.from_infercept(exc) from exc
