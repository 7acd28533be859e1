"""OpenAI response bodies for a finished turn (TurnEnd) and the chunks of a streamed one."""

from __future__ import annotations

import time
import uuid
from typing import Any

from gateway.turns import TurnEnd


def new_response_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def usage(end: TurnEnd) -> dict[str, Any]:
    """Token counts; `cached_tokens` is the prompt part reused from the paused context."""
    return {
        "prompt_tokens": end.num_prompt_tokens,
        "completion_tokens": len(end.token_ids),
        "total_tokens": end.num_prompt_tokens + len(end.token_ids),
        "prompt_tokens_details": {"cached_tokens": end.num_cached_tokens},
    }


def turn_report(end: TurnEnd) -> dict[str, Any]:
    """The gateway's own account of the turn (the `infercept` field of a response): whether it
    resumed a paused context, what the server did with the context at the pause, and how the
    paused context fared on resume."""
    report: dict[str, Any] = {
        "resumed": end.num_cached_tokens > 0,
        "context_action": end.context_action or None,
    }
    if end.resumed is not None:
        report["resume"] = {
            "num_device_blocks_kept": end.resumed.num_device_blocks_kept,
            "num_blocks_swapped_in": end.resumed.num_blocks_swapped_in,
            "num_recomputed_tokens": end.resumed.num_recomputed_tokens,
        }
    return report


def assistant_message(end: TurnEnd, *, with_token_ids: bool) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": end.content or None}
    if end.tool_call is not None:
        message["tool_calls"] = [end.tool_call.to_openai()]
    if with_token_ids:
        message["infercept"] = {"token_ids": list(end.token_ids)}
    return message


def chat_completion(response_id: str, model: str, end: TurnEnd, *, with_token_ids: bool) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": assistant_message(end, with_token_ids=with_token_ids),
                "finish_reason": end.finish_reason,
                "logprobs": None,
            }
        ],
        "usage": usage(end),
        "infercept": turn_report(end),
    }


def chat_chunk(
    response_id: str, model: str, delta: dict[str, Any], finish_reason: str | None = None
) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
    }


def completion(response_id: str, model: str, end: TurnEnd) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "text": end.content, "finish_reason": end.finish_reason, "logprobs": None}],
        "usage": usage(end),
    }


def completion_chunk(
    response_id: str, model: str, text: str, finish_reason: str | None = None
) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}],
    }
