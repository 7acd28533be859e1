"""A resumed request: what its client already received, replayed into a fresh Request.

A client whose stream broke (the scheduler restarted) sends the request again with a
ResumeState: the tokens it received after the prompt, segment by segment, each ended by the
tool result it sent. Replaying them leaves the Request exactly where the first stream was:

    token_ids     = prompt + every generated and returned token, at their positions
    num_generated = generated tokens (they count toward max_tokens)
    script        = the scripted calls not fired yet (a segment that ended on its after_tokens
                    was that call)
    segment_start, returned_ranges, num_returned, num_interceptions, decoder: as at the break

Sampling is seeded per position (seed, position), so with the first stream's seed the tokens
that follow are the ones the first stream would have produced. The KV is not replayed: the
context is computed again when the request is scheduled, and counted as recomputation (the old
scheduler computed all of it but the last token).
"""

from __future__ import annotations

from tokenizers import Tokenizer

from infercept.v1 import generation_pb2 as gen
from scheduler_svc.admission import RequestError, check_token_ids, encode
from scheduler_svc.config import ExecutorDescription
from scheduler_svc.detokenizer import IncrementalDecoder
from scheduler_svc.request import Request

_MASK64 = (1 << 64) - 1


def effective_seed(request_id: int) -> int:
    """A 63-bit seed for a request that brought none: splitmix64 of its id (reproducible runs)."""
    z = (0x5DEECE66D + 0x9E3779B97F4A7C15 * request_id) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) >> 1


def replay(
    request: Request, resume: gen.ResumeState, executor: ExecutorDescription, tokenizer: Tokenizer | None
) -> str:
    """Append what the client already has to a just-admitted `request`; returns the text the
    last token completed (for the stop-string check). RequestError if it cannot be so."""
    last_text = ""
    for segment in resume.segments:
        generated = list(segment.generated_token_ids)
        check_token_ids(generated, executor, "resume: generated tokens")
        for token_id in generated:
            request.token_ids.append(token_id)
            last_text = request.decoder.push(token_id)
        request.num_generated += len(generated)
        if segment.HasField("tool_result"):
            _replay_tool_result(request, segment.tool_result, len(generated), executor, tokenizer)
            last_text = ""
    if resume.segments:
        request.max_computed = len(request.token_ids) - 1
    if request.num_generated > request.sampling.max_tokens:
        raise RequestError(
            "INVALID_ARGUMENT",
            f"resume: {request.num_generated} generated tokens exceed max_tokens {request.sampling.max_tokens}",
        )
    if len(request.token_ids) >= executor.max_model_len:
        raise RequestError(
            "OUT_OF_RANGE",
            f"resume: the context has {len(request.token_ids)} tokens already; the maximum "
            f"model length is {executor.max_model_len}",
        )
    return last_text


def _replay_tool_result(
    request: Request,
    result: gen.ToolResult,
    num_segment_tokens: int,
    executor: ExecutorDescription,
    tokenizer: Tokenizer | None,
) -> None:
    # The server checks the script before the tools, so a segment that ended on the next
    # scripted call's count was that call.
    if request.script and request.script[0].after_tokens == num_segment_tokens:
        request.script.popleft()
    returned = list(result.token_ids)
    if not returned and result.text:
        returned = encode(tokenizer, result.text, "resume: a tool result")
    check_token_ids(returned, executor, "resume: a tool result")
    start = len(request.token_ids)
    request.token_ids += returned
    request.returned_ranges.append((start, len(request.token_ids)))
    request.num_returned += len(returned)
    request.num_interceptions += 1
    request.segment_start = len(request.token_ids)
    request.decoder = IncrementalDecoder(tokenizer)
