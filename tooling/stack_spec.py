"""A local stack (StackSpec): the executor and scheduler a tool starts, and their settings. Its
flags are defined here once for every tool that starts one (`infercept serve`, the load
generator's --launch, the fidelity check), each with its own defaults as a StackSpec, and parsed
once into the spec; the services' command lines are made from the spec, never from flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
from pathlib import Path

from scheduler_svc.policies.spec import parse_policy_spec


@dataclasses.dataclass(frozen=True)
class StackSpec:
    # "default" (SmolLM2-135M-Instruct), "tiny" (random weights) or a Hugging Face-format directory.
    model: str = "default"
    device: str = "auto"  # the executor's: auto | cpu | cuda
    # The scheduler's policy (infercept-scheduler --help lists them), or a spec as the load generator
    # and the simulator take it: `lazy-swap/no-opportunistic-swap`, `infercept/estimator=elapsed`.
    policy: str = "infercept"
    block_size: int = 16  # tokens per KV block
    num_device_blocks: int | None = None  # None: the executor's choice
    num_host_blocks: int | None = None  # None: the executor's choice
    max_batched_tokens: int = 512  # the scheduler's token budget per iteration
    executor_args: tuple[str, ...] = ()  # more infercept-executor flags
    scheduler_args: tuple[str, ...] = ()  # more infercept-scheduler flags
    log_dir: Path | None = None  # where the services write their logs; None: a temporary directory

    def with_policy(self, policy: str) -> StackSpec:
        return dataclasses.replace(self, policy=policy)

    def executor_argv(self) -> list[str]:
        """infercept-executor's flags (without --listen)."""
        argv = ["--model", self.model, "--device", self.device, "--block-size", str(self.block_size)]
        if self.num_device_blocks:
            argv += ["--num-device-blocks", str(self.num_device_blocks)]
        if self.num_host_blocks is not None:
            argv += ["--num-host-blocks", str(self.num_host_blocks)]
        return argv + list(self.executor_args)

    def scheduler_argv(self) -> list[str]:
        """infercept-scheduler's flags (without --listen and --executor); ValueError for a policy
        spec the real scheduler cannot run."""
        return [
            *policy_argv(self.policy),
            "--max-batched-tokens",
            str(self.max_batched_tokens),
            *self.scheduler_args,
        ]


def policy_argv(policy: str) -> list[str]:
    """infercept-scheduler's flags for `policy`, a name or a spec (name/option/...): the options
    become --estimator, --disable and --prefix-caching; a bare name gives --policy alone."""
    spec = parse_policy_spec(policy)
    if spec.iteration_structure != "mixed":
        raise ValueError(
            f"policy spec {policy!r}: the real scheduler runs mixed iterations only (simulator only)"
        )
    argv = ["--policy", spec.policy]
    if "/estimator=" in policy:
        argv += ["--estimator", spec.estimator]
    if spec.disabled_techniques:
        argv += ["--disable", ",".join(spec.disabled_techniques)]
    if spec.prefix_caching is not None:
        argv.append("--prefix-caching" if spec.prefix_caching else "--no-prefix-caching")
    return argv


def add_stack_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, defaults: StackSpec) -> None:
    """The stack's flags, defaulting to `defaults`."""
    parser.add_argument(
        "--model",
        default=defaults.model,
        help="'default' (SmolLM2-135M-Instruct), 'tiny' (random weights) or a Hugging Face-format directory",
    )
    parser.add_argument("--device", default=defaults.device, help="executor device: auto | cpu | cuda")
    parser.add_argument(
        "--policy", default=defaults.policy, help="scheduling policy (infercept-scheduler --help lists them)"
    )
    parser.add_argument("--block-size", type=int, default=defaults.block_size, help="tokens per KV block")
    parser.add_argument(
        "--num-device-blocks",
        type=int,
        default=defaults.num_device_blocks,
        help="device KV blocks (default: the executor's)",
    )
    parser.add_argument(
        "--num-host-blocks",
        type=int,
        default=defaults.num_host_blocks,
        help="host KV blocks (default: the executor's)",
    )
    parser.add_argument(
        "--max-batched-tokens",
        type=int,
        default=defaults.max_batched_tokens,
        help="token budget per iteration",
    )
    parser.add_argument(
        "--executor-args",
        default=shlex.join(defaults.executor_args),
        help="more flags for infercept-executor, one string",
    )
    parser.add_argument(
        "--scheduler-args",
        default=shlex.join(defaults.scheduler_args),
        help="more flags for infercept-scheduler, one string",
    )
    parser.add_argument(
        "--log-dir",
        type=Path,
        default=defaults.log_dir,
        help="where the two services write their logs (default: a temp dir)",
    )


def stack_from_flags(args: argparse.Namespace) -> StackSpec:
    """The spec of add_stack_flags' parsed flags."""
    return StackSpec(
        model=args.model,
        device=args.device,
        policy=args.policy,
        block_size=args.block_size,
        num_device_blocks=args.num_device_blocks,
        num_host_blocks=args.num_host_blocks,
        max_batched_tokens=args.max_batched_tokens,
        executor_args=tuple(shlex.split(args.executor_args)),
        scheduler_args=tuple(shlex.split(args.scheduler_args)),
        log_dir=args.log_dir,
    )
