"""Policy specs: a policy with its options in one string, for sweeps and ablations.

    infercept                              the policy with its defaults
    infercept/no-swap-budget               ... with a technique switched off (any number of /no-X)
    infercept/estimator=elapsed            ... with another duration estimator
    infercept/prefix-caching=on            ... with prefix caching switched on (or off)
    vllm                                   a baseline (no options)
    vllm/prefill-first                     ... on vLLM 0.2's iteration structure (prompts and
                                           recomputation in iterations of their own, as the
                                           paper ran its baselines; any policy takes it)

The spec is also the label a sweep reports the run under.
"""

from __future__ import annotations

import dataclasses

from scheduler_svc.config import SchedulerConfig


@dataclasses.dataclass(frozen=True)
class PolicySpec:
    label: str
    policy: str
    estimator: str = "history"
    disabled_techniques: tuple[str, ...] = ()
    prefix_caching: bool | None = None  # None: the policy's default
    iteration_structure: str = "mixed"

    def apply(self, config: SchedulerConfig) -> SchedulerConfig:
        """`config` running this policy (ValueError if the options do not fit the policy)."""
        return dataclasses.replace(
            config,
            policy=self.policy,
            estimator=self.estimator,
            disabled_techniques=self.disabled_techniques,
            enable_prefix_caching=self.prefix_caching,
            iteration_structure=self.iteration_structure,
        )


def parse_policy_spec(text: str, default_estimator: str = "history") -> PolicySpec:
    """The spec in `text` (see the module docstring); ValueError naming what is wrong."""
    name, *options = text.strip().split("/")
    estimator, disabled, structure = default_estimator, [], "mixed"
    prefix_caching: bool | None = None
    for option in options:
        if option == "prefill-first":
            structure = option
        elif option.startswith("no-"):
            disabled.append(option.removeprefix("no-"))
        elif option.startswith("estimator="):
            estimator = option.removeprefix("estimator=")
        elif option in ("prefix-caching=on", "prefix-caching=off"):
            prefix_caching = option == "prefix-caching=on"
        else:
            raise ValueError(
                f"policy spec {text!r}: option {option!r} is none of no-TECHNIQUE, estimator=NAME, "
                "prefix-caching=on|off, prefill-first"
            )
    spec = PolicySpec(text.strip(), name, estimator, tuple(disabled), prefix_caching, structure)
    spec.apply(SchedulerConfig())  # validates policy, estimator and techniques
    return spec
