"""AsyncClient (grpc.aio) against the protocol peer."""

from __future__ import annotations

import asyncio
import threading

import pytest

from infercept import (
    Accepted,
    AsyncClient,
    Finished,
    InferceptError,
    Intercepted,
    Resumed,
    SamplingParams,
    ScriptedCall,
    TokenDelta,
    Tool,
)
from tests.client.protocol_server import ProtocolPeer

GREEDY = SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True)


async def test_script_returns_ids_in_place_after_real_waits(peer: tuple[str, ProtocolPeer]) -> None:
    script = [
        ScriptedCall(after_tokens=4, tool="qa", wait_s=0.2, returned_token_ids=[100, 101]),
        ScriptedCall(after_tokens=3, tool="search", wait_s=0.1, returned_token_ids=[200]),
    ]
    async with AsyncClient(peer[0]) as client:
        result = await client.generate(prompt_token_ids=[1, 2, 3], sampling=GREEDY, script=script)
    assert result.output_token_ids == [0, 1, 2, 3, 100, 101, 4, 5, 6, 200, 0, 1, 2]
    assert [(i.tool, i.output_offset) for i in result.interceptions] == [("qa", 4), ("search", 9)]
    assert result.interceptions[0].wait_s >= 0.2 and result.interceptions[1].wait_s >= 0.1
    log = peer[1].sessions[result.request_id].log
    assert log[2][0] - log[0][0] >= 0.2 and log[5][0] - log[3][0] >= 0.1
    assert result.usage.returned_tokens == 3 and result.finish_reason == "length"


async def test_sync_and_async_tools(peer: tuple[str, ProtocolPeer]) -> None:
    threads: list[threading.Thread] = []

    def calc(expression: str) -> str:
        threads.append(threading.current_thread())
        return str(eval(expression))  # the peer only ever writes "1+2"

    async def lookup(text: str) -> list[int]:
        await asyncio.sleep(0.01)
        return [42]

    tools = [Tool("calc", "</calc>", calc, opening_marker="<calc>"), Tool("lookup", [6, 0], lookup)]
    async with AsyncClient(peer[0]) as client:
        result = await client.generate(prompt="p", sampling=SamplingParams(max_tokens=9), tools=tools)
    # calc fires after "</calc>", lookup after the next tokens 6, 0 (" a").
    assert [(i.tool, i.call_text) for i in result.interceptions] == [("calc", "1+2"), ("lookup", " a")]
    assert result.output_token_ids == [0, 1, 2, 3, 4, 5, 6, 0, 42, 1]
    assert result.text == "abc<calc>1+2</calc>3 ab"
    assert threads and threads[0] is not threading.current_thread(), "sync tools run off the event loop"


async def test_a_raising_tool_aborts_the_request(peer: tuple[str, ProtocolPeer]) -> None:
    async def broken(text: str) -> str:
        raise KeyError("missing")

    async with AsyncClient(peer[0]) as client:
        stream = client.stream(prompt="p", sampling=GREEDY, tools=[Tool("calc", "</calc>", broken)])
        with pytest.raises(InferceptError) as info:
            async for _ in stream:
                pass
    assert info.value.code == "TOOL_FAILED" and "KeyError" in info.value.message
    record = peer[1].sessions[stream.request_id]
    assert await asyncio.to_thread(record.cancelled.wait, 5), "the server saw the stream cancelled"


async def test_stream_yields_events_in_order(peer: tuple[str, ProtocolPeer]) -> None:
    async with AsyncClient(peer[0]) as client:
        stream = client.stream(
            prompt_token_ids=[1],
            sampling=SamplingParams(max_tokens=3),
            script=[ScriptedCall(after_tokens=2, tool="qa", returned_token_ids=[9])],
        )
        events = [event async for event in stream]
    assert [type(event) for event in events] == [
        Accepted,
        TokenDelta,
        TokenDelta,
        Intercepted,
        Resumed,
        TokenDelta,
        Finished,
    ]
    assert stream.result.output_token_ids == [0, 1, 9, 2]


async def test_errors_stats_and_info(peer: tuple[str, ProtocolPeer]) -> None:
    async with AsyncClient(peer[0]) as client:
        with pytest.raises(InferceptError) as info:
            await client.generate(prompt="p", sampling=SamplingParams(max_tokens=0))
        assert (info.value.code, info.value.message) == (
            "INVALID_ARGUMENT",
            "sampling.max_tokens must be > 0, got 0",
        )
        with pytest.raises(InferceptError, match="NOT_FOUND"):
            await client.abort("nope")
        with pytest.raises(InferceptError, match="DEADLINE_EXCEEDED"):
            script = [ScriptedCall(after_tokens=1, tool="qa", wait_s=0.3)]
            await client.generate(prompt="p", script=script, timeout_s=0.1)
        stats = await client.server_stats()
        assert {"device_blocks_free", "device_blocks_total", "host_blocks_free", "host_blocks_total"} <= set(
            stats
        )
        assert (await client.server_info()).num_host_blocks == 32


async def test_concurrent_requests_wait_together(peer: tuple[str, ProtocolPeer]) -> None:
    script = [ScriptedCall(after_tokens=1, tool="qa", wait_s=0.3, returned_token_ids=[7])]
    async with AsyncClient(peer[0]) as client:
        results = await asyncio.gather(*(client.generate(prompt="p", script=script) for _ in range(4)))
    assert all(result.output_token_ids[:2] == [0, 7] for result in results)
    # The four calls overlapped: each started before any of them ended (in turn, none would).
    calls = [result.interceptions[0] for result in results]
    assert max(c.started_s for c in calls) < min(c.started_s + c.wait_s for c in calls)


async def test_abort_by_id_finishes_with_abort(slow_peer: tuple[str, ProtocolPeer]) -> None:
    async with AsyncClient(slow_peer[0]) as client:
        stream = client.stream(prompt="p", sampling=SamplingParams(max_tokens=1000))
        async for event in stream:
            if isinstance(event, Accepted):
                await client.abort(event.request_id)
        assert stream.result.finish_reason == "abort"


async def test_leaving_a_stream_early_cancels_it(slow_peer: tuple[str, ProtocolPeer]) -> None:
    async with AsyncClient(slow_peer[0]) as client:
        async with client.stream(prompt="p", sampling=SamplingParams(max_tokens=1000)) as stream:
            async for event in stream:
                if isinstance(event, TokenDelta):
                    break
        record = slow_peer[1].sessions[stream.request_id]
        assert await asyncio.to_thread(record.cancelled.wait, 5), "the server saw the stream cancelled"


async def test_closing_the_client_mid_request_cancels_it(peer: tuple[str, ProtocolPeer]) -> None:
    client = AsyncClient(peer[0])
    script = [ScriptedCall(after_tokens=1, tool="qa", wait_s=30.0)]
    task = asyncio.create_task(
        client.generate(prompt="p", sampling=GREEDY, script=script, program_id="aclose")
    )
    record = await asyncio.to_thread(peer[1].wait_for_session, "aclose")
    assert await asyncio.to_thread(record.tool_started.wait, 5)
    await client.close()
    with pytest.raises(InferceptError) as info:
        await asyncio.wait_for(task, 5)
    assert info.value.code == "CANCELLED"
    assert await asyncio.to_thread(record.cancelled.wait, 5), "the server saw the stream cancelled"


async def test_cancelling_the_task_cancels_the_request(slow_peer: tuple[str, ProtocolPeer]) -> None:
    async with AsyncClient(slow_peer[0]) as client:
        task = asyncio.create_task(
            client.generate(prompt="p", sampling=SamplingParams(max_tokens=1000), program_id="t")
        )
        record = await asyncio.to_thread(slow_peer[1].wait_for_session, "t")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.to_thread(record.cancelled.wait, 5)
