"""A protocol conformance peer for the client tests: a small in-process Generation server.

It follows generation.proto faithfully but has no model: the n-th generated token of a request
(n = 0, 1, ... over the whole request) is n % 7, whose text is TOKEN_TEXTS[n % 7], so that the
text "abc<calc>1+2</calc> " repeats and a Tool with trigger "</calc>" and opening marker "<calc>"
is called with "1+2". Text is tokenized one token per character (token id = ord(c)). It checks
what the real scheduler checks where the tests need it (max_tokens > 0, one prompt, a ToolSpec
trigger, a ToolResult only while intercepted) and records what each session received, so the
tests can assert on what the server saw.

The end-to-end tests against the real scheduler come with the scheduler; this peer only pins
down the client's side of the protocol.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from concurrent import futures

import grpc

from infercept.v1 import generation_pb2 as pb
from infercept.v1 import generation_pb2_grpc

TOKEN_TEXTS = ("a", "b", "c", "<calc>", "1+2", "</calc>", " ")
NUM_DEVICE_BLOCKS, NUM_HOST_BLOCKS, BLOCK_SIZE = 64, 32, 16


def generated_token(n: int) -> int:
    """The n-th generated token of any request."""
    return n % len(TOKEN_TEXTS)


@dataclasses.dataclass
class SessionRecord:
    """What the peer saw of one Session stream."""

    request_id: str
    request: pb.GenerateRequest
    # (time.monotonic(), message) for every Intercepted sent and ClientEvent received after the
    # GenerateRequest, in order.
    log: list[tuple[float, pb.Intercepted | pb.ClientEvent]] = dataclasses.field(default_factory=list)
    is_ended_normally: bool = False  # Finished sent or an error status set
    is_aborted: bool = False  # the Abort rpc named it
    tool_started: threading.Event = dataclasses.field(default_factory=threading.Event)
    cancelled: threading.Event = dataclasses.field(default_factory=threading.Event)


class _Abandoned(Exception):
    """The client went away while the peer waited for a tool result."""


class ProtocolPeer(generation_pb2_grpc.GenerationServicer):
    """The Generation service of the peer. token_delay_s paces generation (0 = as fast as
    possible) so that tests can act on a request while it runs."""

    def __init__(self, token_delay_s: float = 0.0) -> None:
        self.token_delay_s = token_delay_s
        self.sessions: dict[str, SessionRecord] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._counters = {"prompt_tokens": 0, "decode_tokens": 0, "returned_tokens": 0}

    def wait_for_session(self, program_id: str, timeout_s: float = 5.0) -> SessionRecord:
        """The session of the request with `program_id`, once it has arrived; a bounded wait.
        Raises AssertionError if none arrives within timeout_s."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for record in list(self.sessions.values()):
                if record.request.program_id == program_id:
                    return record
            time.sleep(0.01)
        raise AssertionError(f"no session with program_id {program_id!r}")

    def Session(
        self, request_iterator: Iterator[pb.ClientEvent], context: grpc.ServicerContext
    ) -> Iterator[pb.ServerEvent]:
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("event") != "generate":
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the first message must be a GenerateRequest")
        error = _invalid(first.generate)
        if error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, error)
        record = SessionRecord(f"req-{next(self._ids)}", first.generate)
        with self._lock:
            self.sessions[record.request_id] = record

        def on_rpc_end() -> None:
            if not record.is_ended_normally:
                record.cancelled.set()

        context.add_callback(on_rpc_end)
        try:
            yield from self._generate(record, request_iterator, context)
        except _Abandoned:
            return

    def _generate(
        self, record: SessionRecord, requests: Iterator[pb.ClientEvent], context: grpc.ServicerContext
    ) -> Iterator[pb.ServerEvent]:
        request = record.request
        prompt_ids = list(request.prompt_token_ids) or [ord(c) for c in request.prompt]
        yield pb.ServerEvent(
            accepted=pb.Accepted(request_id=record.request_id, num_prompt_tokens=len(prompt_ids))
        )
        usage = pb.Usage(prompt_tokens=len(prompt_ids))
        text, segment_text, segment_ids = "", "", list[int]()
        script = list(request.script)
        while True:
            if script and len(segment_ids) == script[0].after_tokens:
                tool, call_text = script.pop(0).tool, ""
            elif record.is_aborted or usage.generated_tokens == request.sampling.max_tokens:
                yield self._finish(record, "abort" if record.is_aborted else "length", usage)
                return
            else:
                if self.token_delay_s:
                    time.sleep(self.token_delay_s)
                token_id = generated_token(usage.generated_tokens)
                usage.generated_tokens += 1
                token_text = TOKEN_TEXTS[token_id]
                text, segment_text = text + token_text, segment_text + token_text
                segment_ids.append(token_id)
                yield pb.ServerEvent(tokens=pb.TokenDelta(token_ids=[token_id], text=token_text))
                if any(stop in text for stop in request.sampling.stop):
                    yield self._finish(record, "stop", usage)
                    return
                tool, call_text = _triggered(request.tools, segment_text, segment_ids)
                if not tool:
                    continue
            num_context_tokens = usage.prompt_tokens + usage.generated_tokens + usage.returned_tokens
            returned = yield from self._intercept(
                record,
                requests,
                context,
                pb.Intercepted(
                    tool=tool,
                    call_text=call_text,
                    num_context_tokens=num_context_tokens,
                    index=usage.interceptions,
                    context_action=("preserve", "swap")[usage.interceptions % 2],
                ),
            )
            usage.interceptions += 1
            usage.returned_tokens += len(returned)
            segment_text, segment_ids = "", []

    def _intercept(
        self,
        record: SessionRecord,
        requests: Iterator[pb.ClientEvent],
        context: grpc.ServicerContext,
        intercepted: pb.Intercepted,
    ) -> Generator[pb.ServerEvent, None, list[int]]:
        """Send Intercepted, wait for the client's ToolResult, send Resumed; the returned ids."""
        record.log.append((time.monotonic(), intercepted))
        yield pb.ServerEvent(intercepted=intercepted)
        while True:
            try:
                event = next(requests)
            except (StopIteration, grpc.RpcError):
                raise _Abandoned from None
            record.log.append((time.monotonic(), event))
            kind = event.WhichOneof("event")
            if kind == "tool_result":
                break
            if kind == "tool_started":
                record.tool_started.set()
            else:
                record.is_ended_normally = True
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{kind} while intercepted")
        returned = list(event.tool_result.token_ids) or [ord(c) for c in event.tool_result.text]
        num_blocks = intercepted.num_context_tokens // BLOCK_SIZE
        is_preserved = intercepted.context_action == "preserve"
        yield pb.ServerEvent(
            resumed=pb.Resumed(
                num_returned_tokens=len(returned),
                num_device_blocks_kept=num_blocks if is_preserved else 0,
                num_blocks_swapped_in=0 if is_preserved else num_blocks,
            )
        )
        return returned

    def _finish(self, record: SessionRecord, reason: str, usage: pb.Usage) -> pb.ServerEvent:
        record.is_ended_normally = True
        with self._lock:
            self._counters["prompt_tokens"] += usage.prompt_tokens
            self._counters["decode_tokens"] += usage.generated_tokens
            self._counters["returned_tokens"] += usage.returned_tokens
        return pb.ServerEvent(finished=pb.Finished(finish_reason=reason, usage=usage))

    def Abort(self, request: pb.AbortRequest, context: grpc.ServicerContext) -> pb.AbortResponse:
        record = self.sessions.get(request.request_id)
        if record is None or record.is_ended_normally or record.cancelled.is_set():
            context.abort(grpc.StatusCode.NOT_FOUND, f"no live request {request.request_id!r}")
        record.is_aborted = True
        return pb.AbortResponse()

    def GetServerInfo(self, request: pb.ServerInfoRequest, context: grpc.ServicerContext) -> pb.ServerInfo:
        return pb.ServerInfo(
            model="protocol-peer",
            vocab_size=len(TOKEN_TEXTS),
            max_model_len=4096,
            policy="preserve",
            block_size_tokens=BLOCK_SIZE,
            num_device_blocks=NUM_DEVICE_BLOCKS,
            num_host_blocks=NUM_HOST_BLOCKS,
            version="test",
            device="cpu",
            dtype="float32",
        )

    def GetStats(self, request: pb.StatsRequest, context: grpc.ServicerContext) -> pb.Stats:
        with self._lock:
            records = list(self.sessions.values())
            stats = pb.Stats(
                prompt_tokens=self._counters["prompt_tokens"],
                decode_tokens=self._counters["decode_tokens"],
                returned_tokens=self._counters["returned_tokens"],
            )
        stats.device_blocks_free = stats.device_blocks_total = NUM_DEVICE_BLOCKS
        stats.host_blocks_free = stats.host_blocks_total = NUM_HOST_BLOCKS
        stats.requests_by_state["finished"] = sum(r.is_ended_normally for r in records)
        stats.aborted_requests = sum(r.cancelled.is_set() or r.is_aborted for r in records)
        for record in records:
            for _, message in record.log:
                if isinstance(message, pb.Intercepted):
                    stats.interceptions_by_tool[message.tool] += 1
        return stats


def _invalid(request: pb.GenerateRequest) -> str:
    """What is wrong with the request, or ""."""
    if bool(request.prompt) == bool(request.prompt_token_ids):
        return "exactly one of prompt / prompt_token_ids must be non-empty"
    if request.sampling.max_tokens == 0:
        return "sampling.max_tokens must be > 0, got 0"
    if request.sampling.temperature < 0:
        return f"sampling.temperature must be >= 0, got {request.sampling.temperature}"
    for tool in request.tools:
        if not tool.stop_string and not tool.stop_token_ids:
            return f"tool {tool.name!r} needs a stop_string or stop_token_ids"
    return ""


def _triggered(tools: Sequence[pb.ToolSpec], segment_text: str, segment_ids: list[int]) -> tuple[str, str]:
    """(tool name, call text) of the first tool whose trigger ends the segment, else ("", "")."""
    for tool in tools:
        if tool.stop_string and segment_text.endswith(tool.stop_string):
            body = segment_text[: -len(tool.stop_string)]
        elif tool.stop_token_ids and segment_ids[-len(tool.stop_token_ids) :] == list(tool.stop_token_ids):
            body = segment_text
        else:
            continue
        if tool.opening_marker and tool.opening_marker in body:
            body = body[body.rindex(tool.opening_marker) + len(tool.opening_marker) :]
        return tool.name, body
    return "", ""


def start_protocol_peer(token_delay_s: float = 0.0) -> tuple[grpc.Server, str, ProtocolPeer]:
    """Start a peer on 127.0.0.1, a free port; returns (server, "host:port", servicer)."""
    peer = ProtocolPeer(token_delay_s)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    generation_pb2_grpc.add_GenerationServicer_to_server(peer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}", peer
