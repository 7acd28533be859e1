"""What a request asks for: sampling parameters and synthetic scripted interceptions."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from infercept.v1 import generation_pb2 as pb


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How tokens are sampled. The server validates the values (INVALID_ARGUMENT); the client
    passes them through unchanged so that its precise message reaches the caller.

    Defaults follow common serving APIs: 16 tokens, temperature 1.0 (plain sampling; 0 is
    greedy), no nucleus or top-k cut, no seed, no stop strings, stop at end-of-sequence."""

    # Most tokens to generate; tool-returned tokens do not count. The server wants > 0.
    max_tokens: int = 16
    # 0 is greedy; must be >= 0.
    temperature: float = 1.0
    # Nucleus sampling in (0, 1]; 1 disables it.
    top_p: float = 1.0
    # Keep the top_k most likely tokens; 0 disables it.
    top_k: int = 0
    # Same seed, same tokens, whatever the batch and whatever the server did with paused contexts.
    seed: int | None = None
    # Generation finishes ("stop") when the generated text contains one of these.
    stop: Sequence[str] = ()
    # Keep generating past the end-of-sequence token (benchmarks use it for exact lengths).
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        # A tuple keeps the frozen object hashable and immune to the caller's later edits.
        object.__setattr__(self, "stop", tuple(self.stop))

    def to_proto(self) -> pb.SamplingParams:
        """The wire message. Raises ValueError/TypeError for values protobuf cannot encode."""
        message = pb.SamplingParams(
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            stop=list(self.stop),
            ignore_eos=self.ignore_eos,
        )
        if self.seed is not None:
            message.seed = self.seed
        return message


@dataclasses.dataclass(frozen=True)
class ScriptedCall:
    """A synthetic interception for benchmarks and tests: after exactly `after_tokens` tokens
    generated since the previous resume (or since the prompt), the server intercepts the request
    as `tool`. The client then really waits `wait_s` seconds and returns `returned_token_ids`, or
    `returned_text` when that is given (the server tokenizes it)."""

    after_tokens: int
    tool: str
    # Seconds the client waits before answering; also sent as the expected-duration hint.
    wait_s: float = 0.0
    returned_token_ids: Sequence[int] = ()
    returned_text: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "returned_token_ids", tuple(self.returned_token_ids))
        if self.returned_text is not None and self.returned_token_ids:
            raise ValueError("a ScriptedCall returns token ids or text, not both")

    @property
    def output(self) -> str | tuple[int, ...]:
        """What the scripted tool returns: its text if set, else its token ids."""
        return self.returned_text if self.returned_text is not None else tuple(self.returned_token_ids)

    def to_proto(self) -> pb.ScriptedCall:
        return pb.ScriptedCall(
            after_tokens=self.after_tokens, tool=self.tool, expected_duration_s=self.wait_s
        )
