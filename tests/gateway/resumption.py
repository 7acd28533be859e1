"""What the gateway's tests read of a resumed turn: the stats endpoint, and the check that a
follow-up resumed its paused request in place."""

from __future__ import annotations

from typing import Any

import httpx


def stats(gateway_url: str) -> dict[str, Any]:
    """The gateway's /v1/infercept/stats: its own counters and the scheduler's ("scheduler")."""
    answer: dict[str, Any] = httpx.get(f"{gateway_url}/v1/infercept/stats", timeout=10.0).json()
    return answer


def assert_resumed_in_place(
    before: dict[str, Any], after: dict[str, Any], resumed: Any, context_tokens: int
) -> None:
    """`resumed` (a chat completion) continued the paused request of `context_tokens` tokens:
    one resumed turn, its cached tokens that context, and nothing computed again on the server
    (no prompt prefilled, no context recomputed) but the new suffix, returned as a tool result."""
    assert after["gateway"]["resumed_turns"] == before["gateway"]["resumed_turns"] + 1
    assert resumed.usage is not None and resumed.usage.prompt_tokens_details is not None
    assert resumed.usage.prompt_tokens_details.cached_tokens == context_tokens
    server_before, server_after = before["scheduler"], after["scheduler"]
    assert server_after["recomputed_tokens"] == server_before["recomputed_tokens"]
    assert server_after["prompt_tokens"] == server_before["prompt_tokens"]
    suffix = resumed.usage.prompt_tokens - context_tokens
    assert server_after["returned_tokens"] - server_before["returned_tokens"] == suffix > 0
