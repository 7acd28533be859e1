"""What a caller gives the client, each declared once as a frozen dataclass: where the server is
(ClientConfig) and what one request asks for (RequestSpec, with its SamplingParams and
ScriptedCalls).

Client and AsyncClient take these fields as keyword arguments (`takes_fields_of`), so the
parameter lists users call exist only here (a caller holding a spec passes `**as_keywords(spec)`):

    Client("127.0.0.1:50051", token="t")         -> Client.__init__(ClientConfig(...))
    client.generate(prompt="2+2=", sampling=...)  -> Client.generate(RequestSpec(...))
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

import grpc

from infercept.channel import channel_options
from infercept.errors import InferceptError
from infercept.resume import DEFAULT_RESUME, ResumePolicy
from infercept.tls import channel_credentials
from infercept.tools import Tool
from infercept.v1 import generation_pb2 as pb

FieldsP = ParamSpec("FieldsP")
Owner = TypeVar("Owner")
Spec = TypeVar("Spec")
Returned = TypeVar("Returned")


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How tokens are sampled. The server validates the values (INVALID_ARGUMENT); the client
    passes them through unchanged so that its precise message reaches the caller.

    Defaults follow common serving APIs: 16 tokens, temperature 1.0 (plain sampling; 0 is
    greedy), no nucleus or top-k cut, no seed, no stop strings, stop at end-of-sequence."""

    # Most tokens to generate; tool-returned tokens do not count. The server wants > 0.
    max_tokens: int = 16
    # 0 is greedy; must be >= 0.
    temperature: float = 1.0
    # Nucleus sampling in (0, 1]; 1 disables it.
    top_p: float = 1.0
    # Keep the top_k most likely tokens; 0 disables it.
    top_k: int = 0
    # Same seed, same tokens, whatever the batch and whatever the server did with paused contexts.
    seed: int | None = None
    # Generation finishes ("stop") when the generated text contains one of these.
    stop: Sequence[str] = ()
    # Keep generating past the end-of-sequence token (benchmarks use it for exact lengths).
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        # A tuple keeps the frozen object hashable and immune to the caller's later edits.
        object.__setattr__(self, "stop", tuple(self.stop))

    def to_proto(self) -> pb.SamplingParams:
        """The wire message. Raises ValueError/TypeError for values protobuf cannot encode."""
        message = pb.SamplingParams(
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            stop=list(self.stop),
            ignore_eos=self.ignore_eos,
        )
        if self.seed is not None:
            message.seed = self.seed
        return message


@dataclasses.dataclass(frozen=True)
class ScriptedCall:
    """A synthetic interception for benchmarks and tests: after exactly `after_tokens` tokens
    generated since the previous resume (or since the prompt), the server intercepts the request
    as `tool`. The client then really waits `wait_s` seconds and returns `returned_token_ids`, or
    `returned_text` when that is given (the server tokenizes it)."""

    after_tokens: int
    tool: str
    # Seconds the client waits before answering; also sent as the expected-duration hint.
    wait_s: float = 0.0
    returned_token_ids: Sequence[int] = ()
    returned_text: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "returned_token_ids", tuple(self.returned_token_ids))
        if self.returned_text is not None and self.returned_token_ids:
            raise ValueError("a ScriptedCall returns token ids or text, not both")

    @property
    def output(self) -> str | tuple[int, ...]:
        """What the scripted tool returns: its text if set, else its token ids."""
        return self.returned_text if self.returned_text is not None else tuple(self.returned_token_ids)

    def to_proto(self) -> pb.ScriptedCall:
        return pb.ScriptedCall(
            after_tokens=self.after_tokens, tool=self.tool, expected_duration_s=self.wait_s
        )


@dataclasses.dataclass(frozen=True)
class RequestSpec:
    """One request as the caller describes it: the keyword arguments of Client.generate/stream and
    AsyncClient.generate/stream. The server validates the values (INVALID_ARGUMENT with its
    precise message); to_proto() refuses only what protobuf cannot encode."""

    # The prompt as text. Give exactly one of prompt, prompt_token_ids and messages (the server checks).
    prompt: str | None = None
    _: dataclasses.KW_ONLY
    # The prompt as token ids.
    prompt_token_ids: Sequence[int] | None = None
    # A conversation in OpenAI's form ({"role", "content"}, assistant "tool_calls", tool
    # "tool_call_id"), rendered with the model's chat template; a text tool result then goes in as
    # the template's tool turn.
    messages: Sequence[Mapping[str, Any]] | None = None
    # SamplingParams() when None.
    sampling: SamplingParams | None = None
    # Tools the model may call (with a schema: described to the template, called as <tool_call> JSON).
    tools: Sequence[Tool] = ()
    # Synthetic interceptions, in order.
    script: Sequence[ScriptedCall] = ()
    # Groups the requests of one program (logs, routing).
    program_id: str = ""
    # Seconds until the whole request, tool calls and resumptions included, is abandoned
    # (DEADLINE_EXCEEDED); a deadline of the calls, not a field of the GenerateRequest. None: none.
    timeout_s: float | None = None

    def to_proto(self) -> pb.GenerateRequest:
        """The GenerateRequest, values passed through for the server to validate. Raises
        InferceptError("INVALID_ARGUMENT") only for values protobuf cannot encode (negative ids,
        a message that is not an OpenAI-style dict)."""
        try:
            return pb.GenerateRequest(
                prompt=self.prompt or "",
                prompt_token_ids=list(self.prompt_token_ids or ()),
                sampling=(self.sampling or SamplingParams()).to_proto(),
                tools=[tool.to_proto() for tool in self.tools if tool.trigger],
                script=[call.to_proto() for call in self.script],
                program_id=self.program_id,
                messages=[chat_message(message) for message in self.messages or ()],
                tool_schemas_json=[tool.schema_json() for tool in self.tools if tool.schema is not None],
            )
        except (TypeError, ValueError, KeyError, AttributeError) as error:
            raise InferceptError("INVALID_ARGUMENT", f"cannot encode the request: {error}") from error


def chat_message(message: Mapping[str, Any]) -> pb.ChatMessage:
    """An OpenAI-style message dict as a ChatMessage (content None is empty; tool call arguments
    as JSON text or an object)."""
    calls = [
        pb.ChatToolCall(
            id=call.get("id", ""),
            name=call["function"]["name"],
            arguments_json=arguments if isinstance(arguments, str) else json.dumps(arguments),
        )
        for call in message.get("tool_calls") or ()
        for arguments in [call["function"].get("arguments", "{}")]
    ]
    return pb.ChatMessage(
        role=message["role"],
        content=message.get("content") or "",
        tool_calls=calls,
        tool_call_id=message.get("tool_call_id") or "",
        name=message.get("name") or "",
    )


@dataclasses.dataclass(frozen=True)
class ClientConfig:
    """Where and how a client reaches the server: the constructor arguments of Client and
    AsyncClient."""

    # "host:port" of the scheduler's public API.
    address: str
    _: dataclasses.KW_ONLY
    # Extra gRPC channel options; they override the defaults of the same name.
    options: Sequence[tuple[str, Any]] = ()
    # PEM of the CA that signed the server's certificate; given, the channel uses TLS (else plaintext).
    root_certificates: bytes | None = None
    # Sent as `authorization: Bearer <token>` on every call.
    token: str | None = None
    # How a request whose stream breaks with UNAVAILABLE is resubmitted (NO_RESUME: never).
    resume: ResumePolicy = DEFAULT_RESUME

    @property
    def channel_options(self) -> list[tuple[str, Any]]:
        """The default channel options with `options` applied over them."""
        return channel_options(self.options)

    @property
    def credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials when root_certificates are given, else None (plaintext)."""
        return channel_credentials(self.root_certificates) if self.root_certificates is not None else None


def as_keywords(spec: RequestSpec | ClientConfig) -> dict[str, Any]:
    """The spec's fields by name, as they are (not copied, unlike dataclasses.asdict), for a
    caller that holds a spec: `Client(**as_keywords(config))`, `client.generate(**as_keywords(spec))`."""
    return {field.name: getattr(spec, field.name) for field in dataclasses.fields(spec)}


def takes_fields_of(
    spec_type: Callable[FieldsP, Spec],
) -> Callable[[Callable[[Owner, Spec], Returned]], Callable[Concatenate[Owner, FieldsP], Returned]]:
    """Decorate a method `method(self, spec)` so that callers pass the spec's constructor
    arguments instead: `obj.method(*args, **kwargs)` runs `method(obj, spec_type(*args, **kwargs))`.
    Type checkers and help() show the spec's parameters; a wrong or missing argument is the
    spec's TypeError. An async method stays awaitable (the wrapper returns its coroutine)."""

    def decorate(
        method: Callable[[Owner, Spec], Returned],
    ) -> Callable[Concatenate[Owner, FieldsP], Returned]:
        @functools.wraps(method)
        def with_fields(self: Owner, /, *args: FieldsP.args, **kwargs: FieldsP.kwargs) -> Returned:
            return method(self, spec_type(*args, **kwargs))

        own = inspect.signature(method)
        (self_parameter, *_) = own.parameters.values()
        fields = inspect.signature(spec_type).parameters.values()
        with_fields.__signature__ = own.replace(parameters=[self_parameter, *fields])  # type: ignore[attr-defined]
        return with_fields

    return decorate
