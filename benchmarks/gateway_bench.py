"""Gateway benchmark: multi-turn tool-calling conversations through the OpenAI-compatible gateway,
with turn-to-turn resume on and off, side by side, on one stack.

    python -m benchmarks.gateway_bench [--conversations 24] [--concurrency 8] [--policy infercept]

Each conversation is a request of the authors' trace (the copy the load generator ships, truncated
at 2048 tokens) with its token counts scaled by --token-scale and its call durations by
--duration-scale. An agent loop drives it with the `openai` package: a user prompt of the
trace's length, then one HTTP turn per segment; each turn ends in a scripted tool call after the
segment's generated tokens (the `infercept` extension: the random `tiny` model writes no calls of
its own), the agent waits the call's duration and sends the whole conversation back with the
tool's result (the returned tokens), as agent frameworks do. With resume on, the follow-up
continues the request paused on the server and only the new tokens are computed; with resume off
(`--no-resume`), every turn is a new request whose whole conversation is prefilled again.

Printed per mode: forward tokens from the scheduler's GetStats (prefill, returned, recomputed,
decode), mean latency per turn and per generated token, completed conversations per second.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import openai

from gateway.background import serve_in_thread
from gateway.config import GatewayConfig
from tooling.launcher import launch
from tooling.loadgen.trace_replay import PACKAGED_TRUNCATED_TRACE, packaged_trace_path

TRACE = packaged_trace_path(PACKAGED_TRUNCATED_TRACE)  # shipped with the load generator
MODEL = "tiny"  # the model the benchmark launches
# Context the tiny model may reach, leaving room for the ChatML wrapping of every turn.
MAX_CONTEXT_TOKENS = 900
# Tokens of ChatML and call text each tool turn adds besides the tool's own output (byte tokenizer).
TURN_OVERHEAD_TOKENS = 110


@dataclasses.dataclass(frozen=True)
class Segment:
    num_generated: int  # tokens generated before the call (or to the end, for the last)
    num_returned: int  # tokens the call returns (0: the last segment)
    call_s: float  # the call's duration, seconds (scaled)


@dataclasses.dataclass(frozen=True)
class Conversation:
    tool: str  # the augmentation, used as the tool's name
    num_prompt: int
    segments: tuple[Segment, ...]


def load_conversations(
    path: Path, count: int, token_scale: float, duration_scale: float, seed: int
) -> list[Conversation]:
    """`count` trace requests drawn with replacement (seeded), scaled; calls past
    MAX_CONTEXT_TOKENS are dropped, as the authors' harness truncates at the model's length."""
    trace: dict[str, list[dict[str, Any]]] = json.loads(path.read_text())
    keys = sorted(trace)
    rng = random.Random(seed)
    conversations = []
    for key in (rng.choice(keys) for _ in range(count)):
        raw = trace[key]
        num_prompt = max(1, round(raw[0]["prompt_tokens"] * token_scale))
        context, segments = num_prompt + 60, []
        for segment in raw:
            generated = max(1, round(segment["completion_tokens"] * token_scale))
            returned = max(1, round(segment.get("api_token_length", 0) * token_scale))
            is_call = (
                "api_time" in segment
                and context + generated + returned + TURN_OVERHEAD_TOKENS < MAX_CONTEXT_TOKENS
            )
            segments.append(
                Segment(
                    generated,
                    returned if is_call else 0,
                    segment.get("api_time", 0.0) * duration_scale if is_call else 0.0,
                )
            )
            context += generated + returned + TURN_OVERHEAD_TOKENS
            if not is_call:
                break
        conversations.append(Conversation(key.split("/")[0], num_prompt, tuple(segments)))
    return conversations


@dataclasses.dataclass
class Measured:
    turn_latencies_s: list[float] = dataclasses.field(default_factory=list)
    token_latencies_s: list[float] = dataclasses.field(default_factory=list)
    num_conversations: int = 0


async def run_conversation(
    client: openai.AsyncOpenAI, conversation: Conversation, measured: Measured
) -> None:
    messages: list[Any] = [{"role": "user", "content": "q" * conversation.num_prompt}]
    for index, segment in enumerate(conversation.segments):
        script = [
            {"after_tokens": s.num_generated, "tool": conversation.tool}
            for s in conversation.segments[index:]
            if s.num_returned
        ]
        started_s = time.perf_counter()
        answer = await client.chat.completions.create(
            model=MODEL,
            messages=messages,
            max_tokens=segment.num_generated,
            temperature=0,
            extra_body={"infercept": {"script": script, "ignore_eos": True, "return_token_ids": True}},
        )
        latency_s = time.perf_counter() - started_s
        measured.turn_latencies_s.append(latency_s)
        measured.token_latencies_s.append(
            latency_s / max(1, answer.usage.completion_tokens if answer.usage else 1)
        )
        if not segment.num_returned:
            break
        assistant = answer.choices[0].message.model_dump(exclude_none=True)
        await asyncio.sleep(segment.call_s)  # the tool runs
        call_id = assistant["tool_calls"][0]["id"]
        messages += [
            assistant,
            {"role": "tool", "tool_call_id": call_id, "content": "r" * segment.num_returned},
        ]
    measured.num_conversations += 1


async def run_mode(url: str, conversations: list[Conversation], concurrency: int) -> tuple[Measured, float]:
    measured = Measured()
    limit = asyncio.Semaphore(concurrency)

    async def one(conversation: Conversation) -> None:
        async with limit:
            await run_conversation(client, conversation, measured)

    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="-", max_retries=0, timeout=300.0) as client:
        started_s = time.perf_counter()
        await asyncio.gather(*(one(c) for c in conversations))
        return measured, time.perf_counter() - started_s


def stats(url: str) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(f"{url}/v1/infercept/stats", timeout=30.0).json()
    return answer


def measure(
    scheduler: str, is_resume_enabled: bool, conversations: list[Conversation], concurrency: int
) -> dict[str, Any]:
    config = GatewayConfig(scheduler_address=scheduler, is_resume_enabled=is_resume_enabled)
    with serve_in_thread(config) as url:
        before = stats(url)["scheduler"]
        measured, elapsed_s = asyncio.run(run_mode(url, conversations, concurrency))
        after = stats(url)
    tokens = {
        k: after["scheduler"][k] - before[k]
        for k in ("prompt_tokens", "returned_tokens", "recomputed_tokens", "decode_tokens")
    }
    return {
        "resume": is_resume_enabled,
        **tokens,
        "forward_tokens": sum(tokens.values()),
        "mean_turn_latency_s": statistics.fmean(measured.turn_latencies_s),
        "mean_token_latency_s": statistics.fmean(measured.token_latencies_s),
        "conversations_per_s": measured.num_conversations / elapsed_s,
        "num_turns": len(measured.turn_latencies_s),
        "elapsed_s": elapsed_s,
        "resumed_turns": after["gateway"]["resumed_turns"],
        "fresh_turns": after["gateway"]["fresh_turns"],
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    columns = [
        ("resume", "resume", "{}"),
        ("prefill", "prompt_tokens", "{:,}"),
        ("returned", "returned_tokens", "{:,}"),
        ("recomputed", "recomputed_tokens", "{:,}"),
        ("decode", "decode_tokens", "{:,}"),
        ("forward", "forward_tokens", "{:,}"),
        ("turn lat (s)", "mean_turn_latency_s", "{:.3f}"),
        ("tok lat (ms)", "mean_token_latency_s", "{:.1f}"),
        ("conv/s", "conversations_per_s", "{:.3f}"),
        ("turns resumed/fresh", "resumed_turns", "{}"),
    ]
    cells = []
    for row in rows:
        values = {**row, "mean_token_latency_s": row["mean_token_latency_s"] * 1000}
        line = [fmt.format(values[key]) for _, key, fmt in columns]
        line[-1] = f"{row['resumed_turns']}/{row['fresh_turns']}"
        cells.append(line)
    widths = [max(len(title), *(len(line[i]) for line in cells)) for i, (title, _, _) in enumerate(columns)]
    print("  ".join(title.rjust(w) for (title, _, _), w in zip(columns, widths, strict=True)))
    for line in cells:
        print("  ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True)))
    on, off = rows
    print(
        f"resume on / off: forward tokens x{on['forward_tokens'] / off['forward_tokens']:.2f}, "
        f"turn latency x{on['mean_turn_latency_s'] / off['mean_turn_latency_s']:.2f}, "
        f"conversations/s x{on['conversations_per_s'] / off['conversations_per_s']:.2f}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=24)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--policy", default="infercept")
    parser.add_argument("--token-scale", type=float, default=0.25)
    parser.add_argument("--duration-scale", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trace", type=Path, default=TRACE)
    parser.add_argument("--out", type=Path, help="write the figures here as JSON")
    args = parser.parse_args(argv)
    conversations = load_conversations(
        args.trace, args.conversations, args.token_scale, args.duration_scale, args.seed
    )
    num_calls = sum(1 for c in conversations for s in c.segments if s.num_returned)
    print(
        f"{len(conversations)} conversations ({num_calls} tool calls), concurrency {args.concurrency}, "
        f"policy {args.policy}, tokens x{args.token_scale}, call durations x{args.duration_scale}, tiny model on CPU",
        flush=True,
    )
    executor = ["--model", "tiny", "--device", "cpu", "--block-size", "16", "--num-device-blocks", "512"]
    executor += ["--num-host-blocks", "256"]
    scheduler = ["--policy", args.policy, "--max-batched-tokens", "512"]
    with launch(executor, scheduler) as stack:
        rows = [
            measure(stack.scheduler_address, is_on, conversations, args.concurrency)
            for is_on in (True, False)
        ]
    print_table(rows)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
