"""The table of paused turns: conversations whose last HTTP turn ended in a tool call while their
request stays intercepted on the server, keyed by their context token ids.

A follow-up continues a paused turn when its prompt token ids extend the paused context token for
token (and it asks for the same generation settings: the ResumeKey); the longest such context
wins and leaves the table. A paused turn that nobody continues is released (its stream closed,
so the server frees its KV) once its time-to-live has passed, or dropped when the server ends it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Hashable

from gateway.grpc_session import GrpcSession


@dataclasses.dataclass
class PausedTurn:
    session: GrpcSession
    # Generation settings the follow-up must repeat (the server's request keeps its own).
    resume_key: Hashable
    expires_s: float  # time.monotonic() after which the pause is released


class PauseTable:
    """Paused turns by context. Every method is called from the event loop's thread."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._turns: dict[int, PausedTurn] = {}  # by id(session)
        self.num_expired = 0

    def __len__(self) -> int:
        return len(self._turns)

    def add(self, session: GrpcSession, resume_key: Hashable) -> None:
        """Hold `session` (intercepted on the server) until a follow-up takes it or it expires."""
        self._turns[id(session)] = PausedTurn(session, resume_key, self._clock() + self.ttl_s)
        session.on_end = self._forget

    def take(self, prompt_token_ids: list[int], resume_key: Hashable) -> PausedTurn | None:
        """Remove and return the paused turn with the longest context that `prompt_token_ids`
        strictly extends under the same resume key, or None."""
        best: PausedTurn | None = None
        for turn in self._turns.values():
            context = turn.session.context_token_ids
            if (
                turn.resume_key == resume_key
                and len(context) < len(prompt_token_ids)
                and (best is None or len(context) > len(best.session.context_token_ids))
                and prompt_token_ids[: len(context)] == context
            ):
                best = turn
        if best is not None:
            del self._turns[id(best.session)]
            best.session.on_end = None
        return best

    def release_expired(self) -> int:
        """Close the paused turns whose time-to-live has passed; returns how many."""
        now_s = self._clock()
        expired = [turn for turn in self._turns.values() if turn.expires_s <= now_s]
        for turn in expired:
            del self._turns[id(turn.session)]
            turn.session.on_end = None
            turn.session.close()
        self.num_expired += len(expired)
        return len(expired)

    def close_all(self) -> None:
        for turn in list(self._turns.values()):
            turn.session.on_end = None
            turn.session.close()
        self._turns.clear()

    def _forget(self, session: GrpcSession) -> None:
        self._turns.pop(id(session), None)
