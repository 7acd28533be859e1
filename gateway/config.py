"""The gateway's settings, parsed once from the command line."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class GatewayConfig:
    # The scheduler's gRPC address, "host:port".
    scheduler_address: str = "127.0.0.1:50051"
    # The model name clients send; "" means the scheduler's own name for it.
    model_name: str = ""
    # The chat template: None for the model's own, "" for the built-in ChatML one with Hermes
    # tool calls (for a model whose template ignores tools), else the Jinja source to use.
    chat_template: str | None = None
    # A paused turn nobody continues is released (its request aborted) after this many seconds.
    pause_ttl_s: float = 120.0
    # Continue paused requests on follow-ups (off: every turn is a fresh request, as elsewhere).
    is_resume_enabled: bool = True
    # Longest wait for the scheduler's next event within a turn, seconds.
    event_timeout_s: float = 600.0
    # Longest wait for the scheduler to answer at start-up, seconds.
    scheduler_timeout_s: float = 60.0
    # The bearer token presented to a scheduler that requires one (None: no token).
    scheduler_token: str | None = dataclasses.field(default=None, repr=False)
    # PEM of the CA that signed the scheduler's certificate: TLS to it (None: plaintext).
    scheduler_root_certificates: bytes | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.pause_ttl_s <= 0:
            raise ValueError(f"pause_ttl_s must be > 0, got {self.pause_ttl_s}")
        if self.event_timeout_s <= 0 or self.scheduler_timeout_s <= 0:
            raise ValueError("timeouts must be > 0")

    @property
    def sweep_interval_s(self) -> float:
        """How often expired pauses are looked for."""
        return min(1.0, self.pause_ttl_s / 4)
