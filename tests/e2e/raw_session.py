"""A Session stream driven by hand (raw stubs), for protocol-level tests."""

from __future__ import annotations

import queue
from collections.abc import Iterator

import grpc

from infercept.v1 import generation_pb2 as gen
from infercept.v1 import generation_pb2_grpc


class RawSession:
    def __init__(self, address: str) -> None:
        self._channel = grpc.insecure_channel(address)
        self.stub = generation_pb2_grpc.GenerationStub(self._channel)
        self._outbox: queue.Queue[gen.ClientEvent | None] = queue.Queue()
        self._events: Iterator[gen.ServerEvent] = self.stub.Session(iter(self._outbox.get, None))

    def send(self, event: gen.ClientEvent) -> None:
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


def generate_event(prompt_token_ids: list[int], max_tokens: int = 8, **request: object) -> gen.ClientEvent:
    sampling = gen.SamplingParams(max_tokens=max_tokens, ignore_eos=True)
    return gen.ClientEvent(
        generate=gen.GenerateRequest(prompt_token_ids=prompt_token_ids, sampling=sampling, **request)
    )
