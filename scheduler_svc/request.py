"""A request's state in the scheduler: every token, how much of it has KV, and where it stands."""

from __future__ import annotations

import dataclasses
import enum
from collections import deque
from typing import TYPE_CHECKING

from scheduler_svc.chat_template import Conversation
from scheduler_svc.detokenizer import IncrementalDecoder
from scheduler_svc.interception import CallDetector, ScriptedStop

if TYPE_CHECKING:  # policies import requests: a runtime import would be a cycle
    from scheduler_svc.policies.base import PauseAction


class TokenKind(enum.StrEnum):
    """What computing a position is (the statistics count forward tokens by kind)."""

    PROMPT = "prompt"
    DECODE = "decode"  # the last sampled token
    RETURNED = "returned"  # a tool's returned token
    RECOMPUTE = "recompute"  # a position computed before, whose KV was discarded


class FinishReason(enum.StrEnum):
    """Why a request ended (the public API's Finished.finish_reason, spelled alike)."""

    EOS = "eos"
    STOP = "stop"  # a stop string
    LENGTH = "length"  # max_tokens generated
    MAX_MODEL_LEN = "max_model_len"
    ABORT = "abort"
    PAUSE_TIMEOUT = "pause_timeout"


class Status(enum.Enum):
    ACTIVE = "active"  # wants computation (prompt, decode, recompute or returned tokens)
    PAUSED = "paused"  # inside a tool call
    FINISHED = "finished"


@dataclasses.dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    seed: int | None
    stop: tuple[str, ...]
    ignore_eos: bool


@dataclasses.dataclass
class PendingCall:
    """The interception a paused request is waiting on."""

    tool: str
    call_text: str
    paused_at_s: float
    expected_duration_s: float  # 0 = unknown
    context_action: PauseAction | None = (
        None  # what was done with the context at the pause (None: not decided yet)
    )


@dataclasses.dataclass(eq=False)
class Request:
    request_id: int
    arrival_s: float  # queue position: FCFS order (the vllm policy moves it on resume)
    token_ids: list[int]  # prompt, then generated and returned tokens in order
    num_prompt_tokens: int
    sampling: Sampling
    tools: tuple[CallDetector, ...]
    script: deque[ScriptedStop]
    decoder: IncrementalDecoder
    status: Status = Status.ACTIVE
    num_computed: int = 0  # leading positions whose KV is valid (device prefix + host segment)
    max_computed: int = 0  # positions below this were computed at least once
    num_generated: int = 0
    segment_start: int = 0  # index in token_ids where the tokens generated since the last resume begin
    returned_ranges: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    num_returned: int = 0
    num_recomputed: int = 0
    num_interceptions: int = 0
    pending_call: PendingCall | None = None
    finish_reason: FinishReason | None = None
    executor_known: bool = False  # registered with the executor
    chat: Conversation | None = None  # the conversation of a request given as messages

    @property
    def num_pending(self) -> int:
        """Tokens whose KV still has to be computed (the last sampled token counts)."""
        return len(self.token_ids) - self.num_computed

    def kind_at(self, position: int) -> TokenKind:
        """What computing `position` is."""
        last_returned = self.returned_ranges[-1][1] if self.returned_ranges else 0
        if position >= self.max_computed and position >= self.num_prompt_tokens and position >= last_returned:
            return TokenKind.DECODE  # the common case, without scanning the returned ranges
        if position < self.max_computed:
            return TokenKind.RECOMPUTE
        if position < self.num_prompt_tokens:
            return TokenKind.PROMPT
        if any(lo <= position < hi for lo, hi in self.returned_ranges):
            return TokenKind.RETURNED
        return TokenKind.DECODE

    def count_kinds(self, start: int, end: int) -> dict[TokenKind, int]:
        """How many of positions [start, end) are recomputed, prompt, returned or decode tokens."""
        last_returned = self.returned_ranges[-1][1] if self.returned_ranges else 0
        if start >= self.max_computed and start >= self.num_prompt_tokens and start >= last_returned:
            return {TokenKind.DECODE: end - start}  # plain decode
        recompute = max(min(end, self.max_computed) - start, 0)
        fresh_start = max(start, self.max_computed)
        prompt = max(min(end, self.num_prompt_tokens) - fresh_start, 0)
        returned = sum(max(min(end, hi) - max(fresh_start, lo), 0) for lo, hi in self.returned_ranges)
        decode = (end - start) - recompute - prompt - returned
        return {
            TokenKind.RECOMPUTE: recompute,
            TokenKind.PROMPT: prompt,
            TokenKind.RETURNED: returned,
            TokenKind.DECODE: decode,
        }
