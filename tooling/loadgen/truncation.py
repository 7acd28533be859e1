"""Truncation at the model length, as the InferCept authors' harness does it (traces/README.md).

Walking the request segment by segment with the context c (the prompt first):

    generate g   if c + g >= L: generate L - c and stop (no call after it)
    call, get r  if c + r >= L: get L - 1 - c, generate 1 more token and stop

so the final context is at most L. (The harness, on vLLM 0.2, stops a sequence once it is longer
than L, so its contexts reach L + 1 where ours reach L; a token in 2048.) A prompt of L tokens
or more is cut to L - 1, generating one token. A call whose returned tokens end the context
within the length is kept, even at the very end (the trace's last segment generates after it).

Such a prompt-only request (L - 1 prompt tokens, one generated, no call) is what truncation leaves
of a request whose prompt does not fit: at the paper's 2048 a rare chatbot prompt, at a short length
most of a workload (math's prompts average 405 tokens); `count_prompt_only` counts them.
"""

from __future__ import annotations

from collections.abc import Sequence

from scheduler_svc.sim.request_plan import RequestPlan, Segment


def truncate(prompt: int, segments: list[Segment], max_model_len: int) -> tuple[int, list[Segment]]:
    """The request as the harness runs it with a model length of `max_model_len` (see the module
    docstring): the same request if it fits, else cut where its context reaches the length."""
    if max_model_len < 2:
        raise ValueError(f"max_model_len must be >= 2, got {max_model_len}")
    if prompt >= max_model_len:
        return max_model_len - 1, [Segment(1)]
    context, kept = prompt, []
    for index, segment in enumerate(segments):
        if context + segment.generated_tokens >= max_model_len:
            kept.append(Segment(max_model_len - context))
            return prompt, kept
        context += segment.generated_tokens
        if segment.tool is None or index == len(segments) - 1:
            kept.append(Segment(segment.generated_tokens))
            return prompt, kept
        if context + segment.returned_tokens >= max_model_len:
            kept.append(
                Segment(
                    segment.generated_tokens, segment.tool, segment.duration_s, max_model_len - 1 - context
                )
            )
            kept.append(Segment(1))
            return prompt, kept
        context += segment.returned_tokens
        kept.append(segment)
    return prompt, kept


def count_prompt_only(plans: Sequence[RequestPlan], max_model_len: int) -> int:
    """How many of `plans` truncation at `max_model_len` left only their prompt: L - 1 prompt
    tokens and one generated token, without a call (the request ends after its first token)."""
    return sum(p.prompt_tokens == max_model_len - 1 and p.segments == (Segment(1),) for p in plans)
