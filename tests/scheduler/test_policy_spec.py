from __future__ import annotations

import pytest

from scheduler_svc.config import SchedulerConfig
from scheduler_svc.policies.spec import PolicySpec, parse_policy_spec


def test_specs() -> None:
    assert parse_policy_spec("vllm") == PolicySpec("vllm", "vllm")
    spec = parse_policy_spec("infercept/no-swap-budget/no-min-waste/estimator=elapsed")
    assert spec == PolicySpec(
        "infercept/no-swap-budget/no-min-waste/estimator=elapsed",
        "infercept",
        "elapsed",
        ("swap-budget", "min-waste"),
    )
    config = spec.apply(SchedulerConfig(policy="vllm", max_batched_tokens=7))
    assert (config.policy, config.estimator, config.disabled_techniques, config.max_batched_tokens) == (
        "infercept",
        "elapsed",
        ("swap-budget", "min-waste"),
        7,
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nope", "unknown policy 'nope'"),
        ("infercept/no-warp", "unknown technique"),
        ("infercept/estimator=tea-leaves", "unknown duration estimator"),
        ("infercept/fast", "none of no-TECHNIQUE, estimator=NAME, prefix-caching=on"),
        ("vllm/no-min-waste", "has no techniques"),
    ],
)
def test_bad_specs(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_policy_spec(text)
