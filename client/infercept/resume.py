"""When a request whose stream broke is sent again, and what it carries.

A Session stream that ends with UNAVAILABLE (the scheduler restarted, or had no executor for
too long) is resubmitted with what the client already received (SessionState.resume_request):
the server replays it and streams only what follows, seeded as before, so the caller sees one
uninterrupted result. Retries are bounded, with exponential backoff between them.
"""

from __future__ import annotations

import dataclasses

RESUMABLE_CODES = frozenset({"UNAVAILABLE"})


@dataclasses.dataclass(frozen=True)
class ResumePolicy:
    """How often and how patiently a broken request is resubmitted. max_attempts 0: never."""

    max_attempts: int = 5  # resubmissions of one request, in all
    initial_backoff_s: float = 0.5  # before the first; doubled after each
    max_backoff_s: float = 8.0

    def __post_init__(self) -> None:
        if self.max_attempts < 0 or self.initial_backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError("a ResumePolicy's fields must be >= 0")

    def backoff_s(self, attempt: int) -> float:
        """Seconds to wait before resubmission number `attempt` (1, 2, ...)."""
        return min(self.initial_backoff_s * 2 ** (attempt - 1), self.max_backoff_s)


DEFAULT_RESUME = ResumePolicy()
NO_RESUME = ResumePolicy(max_attempts=0)
