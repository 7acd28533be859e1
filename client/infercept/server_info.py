"""The server's description (GetServerInfo) and counters (GetStats) as plain Python values."""

from __future__ import annotations

import dataclasses
from typing import Any

from google.protobuf.message import Message

from infercept.v1 import generation_pb2 as pb


@dataclasses.dataclass(frozen=True)
class ServerInfo:
    """Model, policy and capacity of a server (see ServerInfo in generation.proto)."""

    model: str
    vocab_size: int
    max_model_len: int  # tokens
    eos_token_ids: tuple[int, ...]
    policy: str  # scheduling policy, e.g. "vllm", "preserve", "swap", "infercept"
    block_size_tokens: int
    num_device_blocks: int
    num_host_blocks: int
    max_batched_tokens: int  # most tokens computed in one iteration
    version: str
    device: str  # e.g. "cuda:0"
    dtype: str  # e.g. "bfloat16"
    # The model's tokenizer.json text and chat template (Jinja); "" where the model has none.
    tokenizer_json: str = dataclasses.field(default="", repr=False)
    chat_template: str = dataclasses.field(default="", repr=False)

    @classmethod
    def from_proto(cls, message: pb.ServerInfo) -> ServerInfo:
        values = message_to_dict(message)
        values["eos_token_ids"] = tuple(values["eos_token_ids"])
        return cls(**values)


def message_to_dict(message: Message) -> dict[str, Any]:
    """Every field of a message under its proto name, defaults included: scalars as they are,
    messages as dicts, maps as dicts, repeated fields as lists. (json_format would turn uint64
    into strings and rename fields.)"""
    values: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if isinstance(value, bool | int | float | str | bytes):
            values[field.name] = value
        elif isinstance(value, Message):
            values[field.name] = message_to_dict(value)
        elif hasattr(value, "items"):
            values[field.name] = dict(value.items())
        else:
            values[field.name] = list(value)
    return values
