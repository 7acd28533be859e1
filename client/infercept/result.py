"""What a finished generation returns: tokens, text, interceptions, usage and timings."""

from __future__ import annotations

import dataclasses

from infercept.events import Resumed, Usage


@dataclasses.dataclass(frozen=True)
class Interception:
    """One tool call of a request, as the client saw it."""

    index: int  # the server's interception index: 0, 1, ...
    tool: str
    call_text: str
    is_scripted: bool  # answered by a ScriptedCall, not by a Tool's fn
    # What the server first did with the paused context: "preserve", "discard" or "swap".
    context_action: str
    num_context_tokens: int  # tokens in the context at the pause
    # Where the returned tokens start in GenerateResult.output_token_ids (the number of output
    # tokens before them).
    output_offset: int
    # time.monotonic() when the client started the call, and seconds the call took on the client.
    started_s: float
    wait_s: float
    # The result: token ids (known when the tool returned ids) or text (when it returned text).
    returned_token_ids: tuple[int, ...]
    returned_text: str | None
    # The server's Resumed event; None when the request finished before resuming.
    resumed: Resumed | None = None


@dataclasses.dataclass(frozen=True)
class GenerateResult:
    """A finished request.

    output_token_ids: everything after the prompt, in order: generated ids and the ids tools
    returned. A tool that returned text has no ids on the client (the server tokenizes it), so
    its tokens are missing here; `interceptions[i].resumed.num_returned_tokens` counts them.
    Scripted calls return ids unless given returned_text, so benchmark outputs are exact.

    text: the generated text as the server streamed it (TokenDelta.text), with each text
    tool result inserted where it was returned; results returned as token ids add no text (the
    client has no tokenizer).

    Timings are time.monotonic() seconds, for latency metrics."""

    request_id: str
    num_prompt_tokens: int
    prompt_token_ids: list[int] | None  # as sent; None when the prompt was text
    output_token_ids: list[int]
    text: str
    interceptions: list[Interception]
    finish_reason: str
    usage: Usage
    arrival_s: float  # when the request was sent
    first_token_s: float | None  # when the first generated token arrived; None if none did
    finish_s: float  # when Finished arrived
    tool_time_s: float  # total seconds spent inside tool calls
    # The seed sampling used (the request's, or the server's choice): the same request with this
    # seed gives the same tokens.
    seed: int | None = None
    # Times the request was resubmitted after its stream broke (resume.py).
    num_resumptions: int = 0

    @property
    def latency_s(self) -> float:
        return self.finish_s - self.arrival_s

    @property
    def normalized_latency_s(self) -> float:
        """The paper's metric: (latency − time inside tools) / (generated + returned tokens),
        seconds per token."""
        num_tokens = self.usage.generated_tokens + self.usage.returned_tokens
        return (self.latency_s - self.tool_time_s) / max(num_tokens, 1)
