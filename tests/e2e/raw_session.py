"""A Session stream driven by hand (raw stubs), for protocol-level tests."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from typing import Any

import grpc

from infercept.v1 import generation_pb2 as gen
from infercept.v1 import generation_pb2_grpc

SESSION_TIMEOUT_S = 120.0  # no test waits on a stream for longer


def _serialize(event: gen.ClientEvent | bytes) -> bytes:
    """Events as protobuf; bytes as they are (garbage on purpose)."""
    return event if isinstance(event, bytes) else event.SerializeToString()


class RawSession:
    def __init__(self, address: str) -> None:
        # No send limit of our own: oversized messages must reach the server to be refused there.
        self._channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", -1)])
        self.stub = generation_pb2_grpc.GenerationStub(self._channel)
        self._outbox: queue.Queue[gen.ClientEvent | bytes | None] = queue.Queue()
        session = self._channel.stream_stream(
            "/infercept.v1.Generation/Session",
            request_serializer=_serialize,
            response_deserializer=gen.ServerEvent.FromString,
        )
        self._events: Iterator[gen.ServerEvent] = iter(
            session(iter(self._outbox.get, None), timeout=SESSION_TIMEOUT_S)
        )

    def send(self, event: gen.ClientEvent | bytes) -> None:
        self._outbox.put(event)

    def next_event(self) -> gen.ServerEvent:
        return next(self._events)

    def until(self, kind: str) -> gen.ServerEvent:
        """Read events until one of `kind` ("accepted", "intercepted", "finished", ...)."""
        while True:
            event = self.next_event()
            if event.WhichOneof("event") == kind:
                return event

    def close(self) -> None:
        self._outbox.put(None)
        self._channel.close()


def generate_event(prompt_token_ids: list[int], max_tokens: int = 8, **request: Any) -> gen.ClientEvent:
    sampling = gen.SamplingParams(max_tokens=max_tokens, ignore_eos=True)
    return gen.ClientEvent(
        generate=gen.GenerateRequest(prompt_token_ids=prompt_token_ids, sampling=sampling, **request)
    )
