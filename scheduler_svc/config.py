"""The scheduler's configuration: one frozen dataclass, validated once at start-up."""

from __future__ import annotations

import dataclasses

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
    check_invariants: bool = False  # assert the block-manager invariant every iteration (tests)
    # How an iteration mixes work: "mixed" (decode tokens first, then chunks of prompts and
    # recomputation in the same iteration, within max_batched_tokens) or "prefill-first" (vLLM
    # 0.2, as the paper ran its baselines: an iteration of whole prompts, recomputations and
    # returned tokens when any wait and fit in prefill_token_budget, else one of decodes only).
    iteration_structure: str = "mixed"
    # prefill-first only: tokens of one prefill iteration; vLLM 0.2's max_num_batched_tokens,
    # which defaults to max(max_model_len, 2048) (2048 at the paper's model length; the authors'
    # fork keeps that default and their 6B scripts do not set it).
    prefill_token_budget: int = 2048

    def __post_init__(self) -> None:
        create_policy(self.policy, self.estimator, self.disabled_techniques)  # ValueError if invalid
        if self.iteration_structure not in ITERATION_STRUCTURES:
            raise ValueError(
                f"iteration_structure must be one of {ITERATION_STRUCTURES}, got {self.iteration_structure!r}"
            )
        for name in ("max_batched_tokens", "max_num_seqs", "max_live_requests", "prefill_token_budget"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


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
