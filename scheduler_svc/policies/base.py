"""The policy interface: what happens to a paused request's KV context, and to its queue place."""

from __future__ import annotations

import abc
import enum
from typing import ClassVar

from scheduler_svc.block_manager import BlockManager
from scheduler_svc.request import Request


class PauseAction(enum.Enum):
    PRESERVE = "preserve"  # keep the device blocks through the call
    DISCARD = "discard"  # free them; recompute the context after the call
    SWAP = "swap"  # copy them to host memory, and back after the call


class Policy(abc.ABC):
    """A scheduling policy. Stateless between calls unless it says otherwise; deterministic."""

    name: ClassVar[str]
    description: ClassVar[str]

    @abc.abstractmethod
    def on_pause(self, request: Request, blocks: BlockManager, now: float) -> PauseAction:
        """Decide what to do with `request`'s context now that it is intercepted."""

    def arrival_on_resume(self, request: Request, now: float) -> float:
        """The queue position (arrival time) a request takes when its tool returns."""
        return request.arrival_s
