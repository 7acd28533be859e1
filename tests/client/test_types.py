"""Request building blocks: their wire messages, errors, and messages as dicts."""

from __future__ import annotations

import pickle

import grpc
import pytest

from infercept import InferceptError, SamplingParams, ScriptedCall, Tool
from infercept.channel import MAX_MESSAGE_BYTES, channel_options
from infercept.server_info import message_to_dict
from infercept.v1 import generation_pb2 as pb


def test_sampling_params_pass_through_to_proto() -> None:
    default = SamplingParams().to_proto()
    assert (default.max_tokens, default.temperature, default.top_p, default.top_k) == (16, 1.0, 1.0, 0)
    assert not default.HasField("seed") and not default.ignore_eos and list(default.stop) == []
    params = SamplingParams(max_tokens=0, temperature=-1.0, seed=0, stop=["</s>", "\n"], ignore_eos=True)
    message = params.to_proto()
    # Bad values go through unchanged: the server owns validation and its messages.
    assert (message.max_tokens, message.temperature) == (0, -1.0)
    assert message.HasField("seed") and message.seed == 0
    assert list(message.stop) == ["</s>", "\n"] and message.ignore_eos
    assert params.stop == ("</s>", "\n") and hash(params) == hash(SamplingParams(**vars(params)))


def test_scripted_call() -> None:
    call = ScriptedCall(after_tokens=17, tool="qa", wait_s=0.2, returned_token_ids=[5, 9, 2])
    assert call.to_proto() == pb.ScriptedCall(after_tokens=17, tool="qa", expected_duration_s=0.2)
    assert call.output == (5, 9, 2)
    assert ScriptedCall(1, "qa", returned_text="").output == ""
    with pytest.raises(ValueError, match="not both"):
        ScriptedCall(1, "qa", returned_token_ids=[1], returned_text="x")


def test_tool_spec_from_trigger() -> None:
    by_text = Tool("calc", "</calc>", str, opening_marker="<calc>", expected_duration_s=0.5)
    assert by_text.to_proto() == pb.ToolSpec(
        name="calc", stop_string="</calc>", opening_marker="<calc>", expected_duration_s=0.5
    )
    by_ids = Tool("calc", [4, 5], str)
    assert by_ids.trigger == (4, 5)
    assert by_ids.to_proto() == pb.ToolSpec(name="calc", stop_token_ids=[4, 5])


def test_tool_knows_async_functions() -> None:
    async def lookup(text: str) -> str:
        return text

    class AsyncCallable:
        async def __call__(self, text: str) -> str:
            return text

    assert Tool("a", "x", lookup).is_async and Tool("b", "x", AsyncCallable()).is_async
    assert not Tool("c", "x", str.upper).is_async


class _FakeRpcError(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.RESOURCE_EXHAUSTED

    def details(self) -> str:
        return "the server is full"


def test_inferceptError_from_rpc_error() -> None:
    error = InferceptError.from_rpc_error(_FakeRpcError())
    assert (error.code, error.message) == ("RESOURCE_EXHAUSTED", "the server is full")
    assert str(error) == "RESOURCE_EXHAUSTED: the server is full"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.code, copy.message) == (error.code, error.message)


def test_message_to_dict_keeps_ints_and_maps() -> None:
    stats = pb.Stats(prompt_tokens=2**40, device_blocks_free=3, paused_device_block_seconds=1.5)
    stats.requests_by_state["running"] = 2
    values = message_to_dict(stats)
    assert values["prompt_tokens"] == 2**40 and values["device_blocks_free"] == 3
    assert values["host_blocks_total"] == 0 and values["paused_device_block_seconds"] == 1.5
    assert values["requests_by_state"] == {"running": 2} and values["interceptions_by_tool"] == {}
    assert message_to_dict(pb.Finished(finish_reason="eos"))["usage"]["generated_tokens"] == 0


def test_channel_options_override_defaults() -> None:
    assert dict(channel_options())["grpc.max_receive_message_length"] == MAX_MESSAGE_BYTES
    options = dict(channel_options([("grpc.max_receive_message_length", 1), ("grpc.enable_retries", 0)]))
    assert options["grpc.max_receive_message_length"] == 1 and options["grpc.enable_retries"] == 0
    assert options["grpc.max_send_message_length"] == MAX_MESSAGE_BYTES
