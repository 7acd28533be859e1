"""The scheduler's configuration: one frozen dataclass, validated once at start-up."""

from __future__ import annotations

import dataclasses
import math

from scheduler_svc.policies import create_policy

ITERATION_STRUCTURES = ("mixed", "prefill-first")


@dataclasses.dataclass(frozen=True)
class SchedulerConfig:
    policy: str = "infercept"
    estimator: str = "history"  # the infercept policy's duration estimator: oracle | elapsed | history
    disabled_techniques: tuple[str, ...] = ()  # infercept techniques switched off (ablations)
    max_batched_tokens: int = 512  # tokens computed per iteration (decode tokens + chunks)
    max_num_seqs: int = 256  # requests computed per iteration
    max_live_requests: int = 4096  # beyond this, new requests get RESOURCE_EXHAUSTED
    # A new request is refused (RESOURCE_EXHAUSTED) when the queue ahead of it is expected to take
    # longer than this to compute, seconds; 0: never (admission_control.py). Off here so that the
    # simulator's figures are unchanged; the server's flag turns it on.
    max_queue_wait_s: float = 0.0
    # A paused request whose tool result has not come after this many seconds ends with
    # DEADLINE_EXCEEDED and frees its blocks; 0: never (pause_expiry.py).
    pause_timeout_s: float = 0.0
    check_invariants: bool = False  # assert the block-manager invariant every iteration (tests)
    # Keep freed full KV blocks cached by content and share them between requests whose contexts
    # begin alike; None: the policy's default (on for vllm-apc and continuum, off for the rest).
    enable_prefix_caching: bool | None = None
    # How an iteration mixes work: "mixed" (decode tokens first, then chunks of prompts and
    # recomputation in the same iteration, within max_batched_tokens) or "prefill-first" (vLLM
    # 0.2, as the paper ran its baselines: an iteration of whole prompts and recomputations when
    # any wait and fit in prefill_token_budget, else one of the running batch: decodes, resumed
    # contexts' returned tokens and swap-ins; see queues.py).
    iteration_structure: str = "mixed"
    # prefill-first only: tokens of one prefill iteration; vLLM 0.2's max_num_batched_tokens,
    # which defaults to max(max_model_len, 2048) (2048 at the paper's model length; the authors'
    # fork keeps that default and their 6B scripts do not set it).
    prefill_token_budget: int = 2048
    # Plan the next iteration while the executor computes the current one where that plan cannot
    # depend on its result but through the sampled tokens (Scheduler.schedule_ahead); the real
    # step loop only: the simulator and tests drive schedule and update in turn.
    plan_ahead: bool = True

    def __post_init__(self) -> None:
        create_policy(self.policy, self.estimator, self.disabled_techniques)  # ValueError if invalid
        if self.iteration_structure not in ITERATION_STRUCTURES:
            raise ValueError(
                f"iteration_structure must be one of {ITERATION_STRUCTURES}, got {self.iteration_structure!r}"
            )
        for name in ("max_batched_tokens", "max_num_seqs", "max_live_requests", "prefill_token_budget"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_queue_wait_s", "pause_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and >= 0 (0: off), got {value}")


@dataclasses.dataclass(frozen=True)
class ExecutorDescription:
    """What the scheduler needs to know of its executor (from Describe)."""

    block_size: int
    num_device_blocks: int
    num_host_blocks: int
    vocab_size: int
    max_model_len: int
    eos_token_ids: tuple[int, ...]
    model: str = ""
    device: str = ""
    dtype: str = ""
    chat_template: str = ""  # Jinja source; "" if the model has none (requests with messages are refused)
    chat_template_tokens: tuple[tuple[str, str], ...] = ()  # (bos_token, "<s>"), ... for the template


@dataclasses.dataclass(frozen=True)
class LinkConfig:
    """How the scheduler watches its executor and rides out losing it (step_loop.py)."""

    step_timeout_s: float = 120.0  # a plan unanswered this long means a hung executor
    reset_timeout_s: float = 10.0  # the same for a Reset or a health probe
    outage_timeout_s: float = 30.0  # computing requests wait this long for an executor, then UNAVAILABLE
    probe_interval_s: float = 1.0  # an idle loop checks the executor's health this often
    reconnect_backoff_s: float = 0.5  # between two attempts to reach a lost executor

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            if not getattr(self, field.name) > 0:
                raise ValueError(f"{field.name} must be > 0, got {getattr(self, field.name)}")


DEFAULT_LINK = LinkConfig()
