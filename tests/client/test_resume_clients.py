"""Both clients resubmit a request whose stream broke with UNAVAILABLE, with what they received,
and hand the caller one result; other errors, and NO_RESUME, reach the caller."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from infercept import NO_RESUME, AsyncClient, Client, InferceptError, ResumePolicy, SamplingParams
from infercept.v1 import generation_pb2 as pb
from infercept.v1 import generation_pb2_grpc

FAST = ResumePolicy(max_attempts=2, initial_backoff_s=0.01)


class BreakingPeer(generation_pb2_grpc.GenerationServicer):
    """Sends tokens 1, 2 then breaks with `code` on the first stream; on a resumed one, sends 3
    and Finished (or, with breaks_every_stream, breaks again). Records every GenerateRequest it gets."""

    def __init__(self, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        self.code = code
        self.breaks_every_stream = False
        self.requests: list[pb.GenerateRequest] = []

    def Session(
        self, request_iterator: Iterator[pb.ClientEvent], context: grpc.ServicerContext
    ) -> Iterator[pb.ServerEvent]:
        request = next(request_iterator).generate
        self.requests.append(request)
        yield pb.ServerEvent(accepted=pb.Accepted(request_id=f"r{len(self.requests)}", seed=99))
        if not request.HasField("resume"):
            yield pb.ServerEvent(tokens=pb.TokenDelta(token_ids=[1, 2], text="ab"))
            context.abort(self.code, "the scheduler went away")
        if self.breaks_every_stream:
            context.abort(self.code, "the scheduler went away again")
        yield pb.ServerEvent(tokens=pb.TokenDelta(token_ids=[3], text="c"))
        yield pb.ServerEvent(finished=pb.Finished(finish_reason="length", usage=pb.Usage(generated_tokens=3)))


@pytest.fixture
def breaking() -> Iterator[tuple[str, BreakingPeer]]:
    server = grpc.server(futures.ThreadPoolExecutor(4))
    # The generated type stubs declare every RPC abstract; at run time the servicer base answers
    # UNIMPLEMENTED for the RPCs a stand-in leaves out, which is all it needs.
    peer = BreakingPeer()  # type: ignore[abstract]
    generation_pb2_grpc.add_GenerationServicer_to_server(peer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", peer
    server.stop(grace=None)


def _assert_resumed(peer: BreakingPeer, output: list[int], text: str, num_resumptions: int) -> None:
    assert (output, text, num_resumptions) == ([1, 2, 3], "abc", 1)
    first, second = peer.requests
    assert not first.HasField("resume") and not first.sampling.HasField("seed")
    assert second.sampling.seed == 99 and second.resume.previous_request_id == "r1"
    assert [list(s.generated_token_ids) for s in second.resume.segments] == [[1, 2]]


def test_the_sync_client_resumes_a_broken_stream(breaking: tuple[str, BreakingPeer]) -> None:
    address, peer = breaking
    with Client(address, resume=FAST) as client:
        result = client.generate(prompt_token_ids=[5], sampling=SamplingParams(max_tokens=3), timeout_s=30)
    _assert_resumed(peer, result.output_token_ids, result.text, result.num_resumptions)


async def test_the_async_client_resumes_a_broken_stream(breaking: tuple[str, BreakingPeer]) -> None:
    address, peer = breaking
    async with AsyncClient(address, resume=FAST) as client:
        result = await client.generate(
            prompt_token_ids=[5], sampling=SamplingParams(max_tokens=3), timeout_s=30
        )
    _assert_resumed(peer, result.output_token_ids, result.text, result.num_resumptions)


def test_no_resume_and_other_errors_reach_the_caller(breaking: tuple[str, BreakingPeer]) -> None:
    address, peer = breaking
    with Client(address, resume=NO_RESUME) as client, pytest.raises(InferceptError) as unavailable:
        client.generate(prompt_token_ids=[5], timeout_s=30)
    assert unavailable.value.code == "UNAVAILABLE"
    peer.code = grpc.StatusCode.INVALID_ARGUMENT
    with Client(address, resume=FAST) as client, pytest.raises(InferceptError) as invalid:
        client.generate(prompt_token_ids=[5], timeout_s=30)
    assert invalid.value.code == "INVALID_ARGUMENT" and len(peer.requests) == 2  # never resubmitted


def test_both_clients_give_up_after_the_policys_resubmissions(breaking: tuple[str, BreakingPeer]) -> None:
    address, peer = breaking
    peer.breaks_every_stream = True
    with Client(address, resume=FAST) as client, pytest.raises(InferceptError) as sync_error:
        client.generate(prompt_token_ids=[5], timeout_s=30)
    assert sync_error.value.code == "UNAVAILABLE" and len(peer.requests) == 1 + FAST.max_attempts

    async def generate() -> None:
        async with AsyncClient(address, resume=FAST) as client:
            await client.generate(prompt_token_ids=[5], timeout_s=30)

    with pytest.raises(InferceptError) as async_error:
        asyncio.run(generate())
    assert async_error.value.code == "UNAVAILABLE" and len(peer.requests) == 2 * (1 + FAST.max_attempts)
    assert [r.HasField("resume") for r in peer.requests[:3]] == [False, True, True]
