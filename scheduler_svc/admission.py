"""Checking a GenerateRequest and turning it into a Request, or refusing it precisely.

Every field a client controls is bounded here, so that no request can make the server hold or
compute without limit: texts are measured before they are tokenized, and lists and names have
caps (the LIMITS below) that legitimate use stays far from.
"""

from __future__ import annotations

import math
from collections import deque

from tokenizers import Tokenizer

from infercept.errors import StatusError
from infercept.v1 import generation_pb2 as gen
from scheduler_svc.chat_request import ChatRequestError, conversation
from scheduler_svc.chat_template import ChatTemplateError, Conversation
from scheduler_svc.config import ExecutorDescription
from scheduler_svc.detokenizer import IncrementalDecoder
from scheduler_svc.interception import CallDetector, ScriptedStop, ToolTrigger
from scheduler_svc.request import Request, Sampling
from scheduler_svc.tool_calls import HermesToolCalls

# A text longer than this many UTF-8 bytes per token of room is refused before tokenizing: it
# could only fit if its tokens averaged more bytes than BPE vocabularies' tokens do on any real
# text (about 4 for English, below 16 for code). A client with such a text can send token ids.
PROMPT_BYTES_PER_TOKEN_BOUND = 32
MAX_TOOLS = 64  # tool specs per request
MAX_SCRIPT_CALLS = 4096  # scripted calls per request
MAX_STOP_STRINGS = 32  # sampling stop strings per request
MAX_STOP_TOKEN_IDS = 64  # a tool's stop token sequence
MAX_NAME_CHARS = 128  # a tool name, a program id (tool names key per-tool state and statistics)
MAX_MARKER_CHARS = 1024  # a stop string or a tool's stop string / opening marker


class RequestError(StatusError):
    """A request or tool result the server refuses; `code` is a gRPC status code name.
    `retry_after_s`: when the refusal is temporary (overload), when to try again; else None.

    Not the client's InferceptError, though both are StatusErrors: this one is raised inside the
    scheduler and never leaves it as an object; the service edge (servicer.py) ends the RPC with
    its code and message (and the retry hint as metadata), which the client then raises as an
    InferceptError of its own, beside codes only a client has (TOOL_FAILED, PROTOCOL_ERROR)."""

    def __init__(self, code: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(code, message)
        self.retry_after_s = retry_after_s


def check_text_size(text: str, max_num_tokens: int, what: str) -> None:
    """Refuse (OUT_OF_RANGE) a text too long to fit in `max_num_tokens` tokens, without tokenizing it."""
    num_bytes = len(text.encode("utf-8", "surrogatepass"))
    if num_bytes > max_num_tokens * PROMPT_BYTES_PER_TOKEN_BOUND:
        raise RequestError(
            "OUT_OF_RANGE",
            f"{what} is {num_bytes} bytes of text: more than {PROMPT_BYTES_PER_TOKEN_BOUND} bytes for each "
            f"of the {max_num_tokens} tokens that fit; send token ids if it really tokenizes that short",
        )


def _check_length(what: str, length: int, limit: int, unit: str) -> None:
    if length > limit:
        raise RequestError("INVALID_ARGUMENT", f"{what} has {length} {unit}; at most {limit} are allowed")


def check_bounds(proto: gen.GenerateRequest) -> None:
    """Refuse (INVALID_ARGUMENT) lists and names over the LIMITS above; cheap, before anything else."""
    _check_length("the request", len(proto.tools), MAX_TOOLS, "tools")
    _check_length("the script", len(proto.script), MAX_SCRIPT_CALLS, "calls")
    _check_length("sampling.stop", len(proto.sampling.stop), MAX_STOP_STRINGS, "strings")
    _check_length("the program id", len(proto.program_id), MAX_NAME_CHARS, "characters")
    for stop in proto.sampling.stop:
        _check_length("a stop string", len(stop), MAX_MARKER_CHARS, "characters")
    for spec in proto.tools:
        _check_length("a tool name", len(spec.name), MAX_NAME_CHARS, "characters")
        _check_length(
            f"tool {spec.name!r}: stop_string", len(spec.stop_string), MAX_MARKER_CHARS, "characters"
        )
        _check_length(
            f"tool {spec.name!r}: opening_marker", len(spec.opening_marker), MAX_MARKER_CHARS, "characters"
        )
        _check_length(
            f"tool {spec.name!r}: stop_token_ids", len(spec.stop_token_ids), MAX_STOP_TOKEN_IDS, "ids"
        )
    for call in proto.script:
        _check_length("a scripted tool name", len(call.tool), MAX_NAME_CHARS, "characters")


def encode(tokenizer: Tokenizer | None, text: str, what: str) -> list[int]:
    if tokenizer is None:
        raise RequestError(
            "FAILED_PRECONDITION", f"{what} is text, but the model has no tokenizer: send token ids"
        )
    return list(tokenizer.encode(text, add_special_tokens=False).ids)


def check_token_ids(token_ids: list[int], executor: ExecutorDescription, what: str) -> None:
    if token_ids and max(token_ids) >= executor.vocab_size:
        raise RequestError(
            "INVALID_ARGUMENT",
            f"{what}: token id {max(token_ids)} is outside the vocabulary [0, {executor.vocab_size})",
        )


def admit(
    proto: gen.GenerateRequest,
    request_id: int,
    now: float,
    executor: ExecutorDescription,
    tokenizer: Tokenizer | None,
) -> Request:
    """A Request for `proto`, or RequestError saying what is wrong with it."""
    check_bounds(proto)
    if proto.prompt and proto.prompt_token_ids:
        raise RequestError("INVALID_ARGUMENT", "give the prompt as text or as token ids, not both")
    if proto.messages and (proto.prompt or proto.prompt_token_ids):
        raise RequestError("INVALID_ARGUMENT", "give the prompt as messages or as a prompt, not both")
    if proto.prompt:
        check_text_size(proto.prompt, executor.max_model_len, "the prompt")
    chat = _conversation(proto, executor) if proto.messages else None
    prompt = list(proto.prompt_token_ids) or (
        encode(tokenizer, proto.prompt, "the prompt") if proto.prompt else []
    )
    if chat is not None:
        prompt = encode(tokenizer, _render(chat), "the messages")
    if not prompt:
        raise RequestError("INVALID_ARGUMENT", "the prompt is empty")
    check_token_ids(prompt, executor, "prompt")
    if len(prompt) >= executor.max_model_len:
        raise RequestError(
            "OUT_OF_RANGE",
            f"the prompt has {len(prompt)} tokens; the maximum model length is {executor.max_model_len} "
            "and at least one token must be generated",
        )
    return Request(
        request_id=request_id,
        arrival_s=now,
        token_ids=prompt,
        num_prompt_tokens=len(prompt),
        sampling=_sampling(proto.sampling, tokenizer),
        tools=_detectors(proto, tokenizer),
        script=deque(_scripted(call) for call in proto.script),
        decoder=IncrementalDecoder(tokenizer),
        segment_start=len(prompt),
        chat=chat,
    )


def _conversation(proto: gen.GenerateRequest, executor: ExecutorDescription) -> Conversation:
    try:
        return conversation(proto, executor)
    except ChatRequestError as error:
        code = "INVALID_ARGUMENT" if executor.chat_template else "FAILED_PRECONDITION"
        raise RequestError(code, str(error)) from error


def _render(chat: Conversation) -> str:
    try:
        return chat.prompt()
    except ChatTemplateError as error:
        raise RequestError("INVALID_ARGUMENT", str(error)) from error


def _detectors(proto: gen.GenerateRequest, tokenizer: Tokenizer | None) -> tuple[CallDetector, ...]:
    """The marker-pair tools, then (with tool schemas) the model's <tool_call> JSON calls."""
    detectors: list[CallDetector] = [_tool(spec, tokenizer) for spec in proto.tools]
    if proto.tool_schemas_json:
        if tokenizer is None:
            raise RequestError("FAILED_PRECONDITION", "tool schemas need a tokenizer; the model has none")
        detectors.append(HermesToolCalls())
    return tuple(detectors)


def _sampling(s: gen.SamplingParams, tokenizer: Tokenizer | None) -> Sampling:
    if s.max_tokens <= 0:
        raise RequestError("INVALID_ARGUMENT", f"sampling.max_tokens must be > 0, got {s.max_tokens}")
    if not math.isfinite(s.temperature) or s.temperature < 0:
        raise RequestError("INVALID_ARGUMENT", f"sampling.temperature must be >= 0, got {s.temperature}")
    if not 0 <= s.top_p <= 1 or math.isnan(s.top_p):
        raise RequestError("INVALID_ARGUMENT", f"sampling.top_p must be in (0, 1], got {s.top_p}")
    if s.stop and tokenizer is None:
        raise RequestError("FAILED_PRECONDITION", "stop strings need a tokenizer; the model has none")
    return Sampling(
        max_tokens=s.max_tokens,
        temperature=s.temperature,
        top_p=s.top_p or 1.0,
        top_k=s.top_k,
        seed=s.seed if s.HasField("seed") else None,
        stop=tuple(x for x in s.stop if x),
        ignore_eos=s.ignore_eos,
    )


def _tool(spec: gen.ToolSpec, tokenizer: Tokenizer | None) -> ToolTrigger:
    if not spec.name:
        raise RequestError("INVALID_ARGUMENT", "a tool has no name")
    if bool(spec.stop_string) == bool(spec.stop_token_ids):
        raise RequestError(
            "INVALID_ARGUMENT", f"tool {spec.name!r}: set exactly one of stop_string, stop_token_ids"
        )
    if spec.stop_string and tokenizer is None:
        raise RequestError("FAILED_PRECONDITION", f"tool {spec.name!r}: a stop string needs a tokenizer")
    if spec.expected_duration_s < 0:
        raise RequestError("INVALID_ARGUMENT", f"tool {spec.name!r}: expected_duration_s must be >= 0")
    return ToolTrigger(
        name=spec.name,
        stop_string=spec.stop_string,
        stop_token_ids=tuple(spec.stop_token_ids),
        opening_marker=spec.opening_marker,
        expected_duration_s=spec.expected_duration_s,
    )


def _scripted(call: gen.ScriptedCall) -> ScriptedStop:
    if call.after_tokens < 1:
        raise RequestError("INVALID_ARGUMENT", "script: after_tokens must be >= 1")
    if not call.tool:
        raise RequestError("INVALID_ARGUMENT", "script: a scripted call has no tool name")
    if call.expected_duration_s < 0:
        raise RequestError("INVALID_ARGUMENT", "script: expected_duration_s must be >= 0")
    return ScriptedStop(call.after_tokens, call.tool, call.expected_duration_s)
