"""The Session protocol of one request without I/O: the messages to send, and the result.

Client and AsyncClient drive a SessionState the same way and differ only in how they wait:

    send(state.open(now))
    for message in the server's stream:
        event = state.on_message(message, now)       # may raise InferceptError
        if state.pending_call is not None:            # the request was intercepted
            send(state.start_call(now))               # ToolStarted, with the duration hint
            output = run it                           # sleep wait_s, or call the tool's fn
            send(state.finish_call(output, now))      # ToolResult; generation resumes
        elif state.is_finished:
            half-close; the server then ends the RPC
    state.check_finished(); return state.result()

If the stream breaks with UNAVAILABLE and state.can_resume(error) holds, the client waits, opens a
new stream and sends state.reopen() instead of open(): the same request with what has arrived so
far (resume.py); the new stream's Accepted is taken but not shown again.

Which answers an interception: the next unused ScriptedCall if it names the intercepted tool
(it is then used up), otherwise the Tool of that name. A ScriptedCall that carries no return
value of its own and shares its name with a Tool only says *when*: after its wait, that Tool is
run on the call text and returns the result (demos of real tools on a model that writes no calls).
"""

from __future__ import annotations

import dataclasses
import inspect
import operator
from collections.abc import Iterable, Mapping

from infercept.errors import PROTOCOL_ERROR, TOOL_FAILED, UNKNOWN_TOOL, InferceptError
from infercept.events import Accepted, Event, Finished, Intercepted, Resumed, TokenDelta, event_from_proto
from infercept.result import GenerateResult, Interception
from infercept.resume import RESUMABLE_CODES, ResumePolicy
from infercept.tools import Tool
from infercept.types import RequestSpec, ScriptedCall
from infercept.v1 import generation_pb2 as pb


@dataclasses.dataclass(frozen=True)
class PendingCall:
    """An interception the client must answer, and what answers it: a script entry, a tool, or
    both (a script entry with no output of its own gives the timing, the tool the result)."""

    event: Intercepted
    script: ScriptedCall | None
    tool: Tool | None

    @property
    def expected_duration_s(self) -> float:
        if self.script is not None:
            return self.script.wait_s
        assert self.tool is not None, "a pending call has a script entry or a tool"
        return self.tool.expected_duration_s


def tool_failed(call: PendingCall, error: BaseException) -> InferceptError:
    """The error for a tool whose fn raised `error`."""
    return InferceptError(
        TOOL_FAILED,
        f"tool {call.event.tool!r} raised {type(error).__name__}: {error}; the request was aborted",
    )


def encode_tool_output(
    call: PendingCall, output: object
) -> tuple[pb.ToolResult, tuple[int, ...], str | None]:
    """The ToolResult for a tool's return value, with the returned ids and text it carries.
    Raises InferceptError(TOOL_FAILED) for anything but a str or a sequence of token ids."""
    if isinstance(output, str):
        return pb.ToolResult(text=output), (), output
    if inspect.iscoroutine(output):
        output.close()  # never awaited: close it so Python does not warn later
        raise InferceptError(TOOL_FAILED, f"tool {call.event.tool!r} is async; async tools need AsyncClient")
    if isinstance(output, Iterable) and not isinstance(output, bytes | Mapping):
        try:
            token_ids = tuple(operator.index(token_id) for token_id in output)
            return pb.ToolResult(token_ids=token_ids), token_ids, None
        except (TypeError, ValueError) as error:
            raise InferceptError(
                TOOL_FAILED, f"tool {call.event.tool!r} returned token ids that cannot be sent: {error}"
            ) from error
    raise InferceptError(
        TOOL_FAILED,
        f"tool {call.event.tool!r} returned {type(output).__name__}, not a str or a sequence of token ids",
    )


class SessionState:
    """Protocol state and result assembly of one Session stream. Times are passed in (`now`,
    time.monotonic() seconds) so the same object serves both clients and plain tests."""

    def __init__(self, spec: RequestSpec) -> None:
        """Raises InferceptError("INVALID_ARGUMENT") for a spec protobuf cannot encode."""
        self.request = spec.to_proto()
        self.tools = tuple(spec.tools)
        self.script = tuple(spec.script)
        self._tools_by_name = {tool.name: tool for tool in reversed(self.tools)}  # the first wins
        self._num_script_used = 0
        self.pending_call: PendingCall | None = None
        self._call_started_s: float | None = None
        # What the result is assembled from.
        self._request_id = ""
        self._num_prompt_tokens = 0
        self._output_token_ids: list[int] = []
        self._text_parts: list[str] = []
        self._interceptions: list[Interception] = []
        self._finished: Finished | None = None
        self._seed: int | None = None  # from the first Accepted
        self._num_accepted = 0
        self._arrival_s = 0.0
        self._first_token_s: float | None = None
        self._finish_s = 0.0

    @property
    def request_id(self) -> str:
        """The server's id once Accepted has arrived, else ""."""
        return self._request_id

    @property
    def is_finished(self) -> bool:
        return self._finished is not None

    def open(self, now: float) -> pb.ClientEvent:
        """The first message of the stream; `now` becomes the request's arrival time."""
        self._arrival_s = now
        return pb.ClientEvent(generate=self.request)

    def on_message(self, message: pb.ServerEvent, now: float) -> Event | None:
        """Take one server message. Returns its typed event, or None for one to skip (an unknown
        kind, anything after Finished). Raises InferceptError for an Intercepted no script entry
        or tool answers (UNKNOWN_TOOL) or one that arrives while a call is pending."""
        event = event_from_proto(message)
        if self._finished is not None:
            return None
        if isinstance(event, Accepted):
            self._request_id, self._num_prompt_tokens = event.request_id, event.num_prompt_tokens
            self._num_accepted += 1
            if self._seed is None:
                self._seed = event.seed
            if self._num_accepted > 1:
                return None  # a resumed stream: the caller saw the request accepted already
        elif isinstance(event, TokenDelta):
            if event.token_ids and self._first_token_s is None:
                self._first_token_s = now
            self._output_token_ids.extend(event.token_ids)
            self._text_parts.append(event.text)
        elif isinstance(event, Intercepted):
            self.pending_call = self._resolve(event)
        elif isinstance(event, Resumed):
            self._attach_resumed(event)
        elif isinstance(event, Finished):
            self._finished, self._finish_s = event, now
        return event

    def can_resume(self, error: InferceptError) -> bool:
        """Whether the request may be resubmitted after `error` ended its stream: a resumable
        status, no Finished yet, and no interception waiting for its result."""
        return error.code in RESUMABLE_CODES and self._finished is None and self.pending_call is None

    def reopen(self) -> pb.ClientEvent:
        """The first message of a new stream that resumes this request (resume.py)."""
        request = pb.GenerateRequest()
        request.CopyFrom(self.request)
        if self._seed is not None and not request.sampling.HasField("seed"):
            request.sampling.seed = self._seed  # the seed the first stream sampled with
        request.resume.previous_request_id = self._request_id
        request.resume.segments.extend(self._segments())
        return pb.ClientEvent(generate=request)

    def _segments(self) -> list[pb.ResumeSegment]:
        """What arrived after the prompt: generated tokens, each run ended by a tool's result."""
        segments, start = [], 0
        for interception in self._interceptions:
            segment = pb.ResumeSegment(
                generated_token_ids=self._output_token_ids[start : interception.output_offset]
            )
            segment.tool_result.SetInParent()  # present even when the tool returned nothing
            if interception.returned_text is not None:
                segment.tool_result.text = interception.returned_text
            else:
                segment.tool_result.token_ids.extend(interception.returned_token_ids)
            segments.append(segment)
            start = interception.output_offset + len(interception.returned_token_ids)
        segments.append(pb.ResumeSegment(generated_token_ids=self._output_token_ids[start:]))
        return segments

    def start_call(self, now: float) -> pb.ClientEvent:
        """ToolStarted for the pending call, which the client starts running at `now`."""
        assert self.pending_call is not None, "start_call needs a pending interception"
        self._call_started_s = now
        return pb.ClientEvent(
            tool_started=pb.ToolStarted(expected_duration_s=self.pending_call.expected_duration_s)
        )

    def finish_call(self, output: object, now: float) -> pb.ClientEvent:
        """ToolResult for the pending call, whose tool returned `output` at `now`. Raises
        InferceptError(TOOL_FAILED) if output is not a str or token ids."""
        call, started_s = self.pending_call, self._call_started_s
        assert call is not None and started_s is not None, "finish_call needs a started call"
        result, returned_ids, returned_text = encode_tool_output(call, output)
        self._interceptions.append(
            Interception(
                index=call.event.index,
                tool=call.event.tool,
                call_text=call.event.call_text,
                is_scripted=call.script is not None,
                context_action=call.event.context_action,
                num_context_tokens=call.event.num_context_tokens,
                output_offset=len(self._output_token_ids),
                started_s=started_s,
                wait_s=now - started_s,
                returned_token_ids=returned_ids,
                returned_text=returned_text,
            )
        )
        self._output_token_ids.extend(returned_ids)
        if returned_text is not None:
            self._text_parts.append(returned_text)
        self.pending_call, self._call_started_s = None, None
        return pb.ClientEvent(tool_result=result)

    def check_finished(self) -> None:
        """Raise InferceptError(PROTOCOL_ERROR) if the stream ended without Finished."""
        if self._finished is None:
            raise InferceptError(PROTOCOL_ERROR, "the server ended the Session stream without Finished")

    def result(self) -> GenerateResult:
        """The finished request. Raises RuntimeError before Finished has arrived."""
        if self._finished is None:
            raise RuntimeError("the request has not finished")
        return GenerateResult(
            request_id=self._request_id,
            num_prompt_tokens=self._num_prompt_tokens,
            prompt_token_ids=list(self.request.prompt_token_ids) if self.request.prompt_token_ids else None,
            output_token_ids=list(self._output_token_ids),
            text="".join(self._text_parts),
            interceptions=list(self._interceptions),
            finish_reason=self._finished.finish_reason,
            usage=self._finished.usage,
            arrival_s=self._arrival_s,
            first_token_s=self._first_token_s,
            finish_s=self._finish_s,
            tool_time_s=sum(interception.wait_s for interception in self._interceptions),
            seed=self._seed,
            num_resumptions=max(self._num_accepted - 1, 0),
        )

    def _resolve(self, event: Intercepted) -> PendingCall:
        if self.pending_call is not None:
            raise InferceptError(
                PROTOCOL_ERROR,
                f"the server intercepted as {event.tool!r} before the previous call was answered",
            )
        if self._num_script_used < len(self.script) and self.script[self._num_script_used].tool == event.tool:
            script = self.script[self._num_script_used]
            self._num_script_used += 1
            has_own_output = script.returned_text is not None or bool(script.returned_token_ids)
            return PendingCall(event, script, None if has_own_output else self._tools_by_name.get(event.tool))
        tool = self._tools_by_name.get(event.tool)
        if tool is None:
            raise InferceptError(
                UNKNOWN_TOOL,
                f"the server intercepted as tool {event.tool!r}, which neither the next scripted call nor a Tool answers",
            )
        return PendingCall(event, None, tool)

    def _attach_resumed(self, event: Resumed) -> None:
        # Resumed follows the ToolResult of the latest interception.
        if self._interceptions and self._interceptions[-1].resumed is None:
            self._interceptions[-1] = dataclasses.replace(self._interceptions[-1], resumed=event)


class StreamBase:
    """What Stream and AsyncStream share besides their I/O: the request's SessionState, its one
    deadline (resumptions included), and whether and when a broken stream is resubmitted."""

    def __init__(self, state: SessionState, timeout_s: float | None, resume: ResumePolicy) -> None:
        self._state = state
        self._timeout_s = timeout_s
        self._resume = resume
        self._deadline_s: float | None = None  # time.monotonic() when the whole request times out
        self._num_calls = 0  # Session calls opened for this request: 1 + its resubmissions

    @property
    def request_id(self) -> str:
        """The server's id once Accepted has arrived, else ""."""
        return self._state.request_id

    @property
    def result(self) -> GenerateResult:
        """The finished request. Raises RuntimeError before Finished has arrived."""
        return self._state.result()

    def _start_deadline(self, now: float) -> None:
        """Start the request's deadline (timeout_s from `now`), once, as iteration starts."""
        if self._timeout_s is not None:
            self._deadline_s = now + self._timeout_s

    def _call_timeout_s(self, now: float) -> float | None:
        """The timeout of a call opened at `now`: what is left of the deadline (None: none)."""
        return None if self._deadline_s is None else max(self._deadline_s - now, 0.0)

    def _first_message(self, now: float) -> pb.ClientEvent:
        """The first message of a new call: the request, then on each later call its resumption."""
        self._num_calls += 1
        return self._state.open(now) if self._num_calls == 1 else self._state.reopen()

    def _backoff_s(self, error: InferceptError) -> float | None:
        """Seconds to wait before resubmitting the request after `error` ended its call, or None
        when it is not to be resubmitted (not resumable, or the policy's attempts are spent)."""
        resubmission = self._num_calls  # the number this one would have (1, 2, ...)
        if resubmission > self._resume.max_attempts or not self._state.can_resume(error):
            return None
        return self._resume.backoff_s(resubmission)
