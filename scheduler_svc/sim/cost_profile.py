"""The simulator's cost model: how long an iteration takes on a virtual device.

    T_fwd(x)   = forward_base_s                                      for 0 < x <= S
               = forward_base_s + forward_s_per_token * (x - S)      for x > S
               = the forward_curve through its measured points,      when the profile has one
                 linear between them, flat below the first,
                 forward_s_per_token per token above the last
    T_fwd(0)   = 0                                                   (no forward pass is run)
    T_ctx(c)   = forward_s_per_context_token * c                     c cached context tokens that
                                                                     the batch's sequences attend
    forward    = forward_fixed_s + forward_time_scale * (T_fwd(x) + T_ctx(c))
    T_out(n)   = swap_fixed_s + n * swap_out_s_per_block             for n > 0 blocks, else 0
    T_in(n)    = swap_fixed_s + n * swap_in_s_per_block              for n > 0 blocks, else 0
    T_over     = iteration_overhead_s                                per iteration of r sequences
                 + iteration_overhead_s_per_sequence * r             attending c cached context
                 + iteration_overhead_s_per_context_token * c        tokens and bringing in n
                 + iteration_overhead_s_per_returned_token * n       tool-returned tokens, outside
                                                                     the executor's step

x is the number of tokens computed in the iteration (all requests together), S the saturation
point: below it the device is not compute-bound, so more tokens cost nothing (DESIGN §5). The
first form is the executor's ProfileResponse, so a profile measured by the real executor can drive
the simulator unchanged (from_profile_response, save/load as JSON). Named profiles with their
stated assumptions live in `profiles.py`.

The other terms (all 0 or empty by default, so a profile without them keeps its meaning) make a
small device such as a CPU faithful, where the flat-then-linear fit is coarse and an iteration's
own costs are not small next to its forward pass:
- forward_curve: the executor's measured forward times of a prefill from an empty context;
- T_ctx: attention reads the cached context of every sequence (a decode step of a long context
  costs more than one of a short one); fitted from the Profile's decode samples (`fit.py`);
- forward_time_scale and forward_fixed_s: the executor's step as served against the profile's
  forward pass alone (on a CPU the step runs on a worker thread, whose many small operations
  each wake the forward's threads, and the scheduler, the clients and the executor's gRPC
  threads share the cores with them);
- T_over: what the real iteration loop adds to the executor's step: the scheduler's own CPU
  time, the plan/result round trip, streaming each sequence's tokens to its client; for an
  engine like vLLM 0.2 also its per-sequence Python (scheduling, incremental detokenization of
  the whole token list, stop strings, an output object per sequence: the context term) and the
  detokenization of every tool-returned token.
The last two are measured through a live stack by the harness (`tooling/harness/calibration.py`)
for our own stack; the paper's profiles take them from vLLM 0.2's own code (`profiles.py`).
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import math
from dataclasses import MISSING
from pathlib import Path
from typing import Any

from infercept.v1 import executor_pb2 as pb
from scheduler_svc.cost_model import CostModel
from scheduler_svc.sim.fit import ForwardSample, context_s_per_token, forward_curve

_NONNEGATIVE_FIELDS = (
    "forward_s_per_token",
    "swap_out_s_per_block",
    "swap_in_s_per_block",
    "swap_fixed_s",
    "forward_s_per_context_token",
    "forward_fixed_s",
    "iteration_overhead_s",
    "iteration_overhead_s_per_sequence",
    "iteration_overhead_s_per_context_token",
    "iteration_overhead_s_per_returned_token",
)


@dataclasses.dataclass(frozen=True)
class CostProfile:
    name: str
    forward_base_s: float  # time of an iteration of 1..S tokens, seconds
    forward_s_per_token: float  # extra seconds per token above S
    saturation_tokens: int  # S: tokens per iteration below which the forward time is flat
    swap_out_s_per_block: float  # device -> host copy, seconds per block
    swap_in_s_per_block: float  # host -> device copy, seconds per block
    swap_fixed_s: float  # fixed cost of one swap call (one direction of one iteration), seconds
    block_size_tokens: int
    num_device_blocks: int  # KV pool on the device
    num_host_blocks: int  # swap space in host memory
    max_model_len: int  # longest context, tokens
    # Measured (tokens, seconds) of a forward pass from an empty context, ascending; empty: the
    # flat-then-linear form above.
    forward_curve: tuple[tuple[int, float], ...] = ()
    forward_time_scale: float = 1.0  # served step time / profiled forward time, beyond the fixed part
    forward_fixed_s: float = 0.0  # seconds every served step takes on top of its scaled forward time
    forward_s_per_context_token: float = 0.0  # per cached token a sequence of the batch attends
    iteration_overhead_s: float = 0.0  # per iteration, outside the executor's step
    iteration_overhead_s_per_sequence: float = 0.0  # per sequence computed in the iteration
    iteration_overhead_s_per_context_token: float = 0.0  # per cached token those sequences attend
    iteration_overhead_s_per_returned_token: float = 0.0  # per tool-returned token computed in it
    # Host swap pools that differ by policy: (policy name, blocks); a policy not listed gets
    # num_host_blocks. The paper's scripts give Swap and InferCept 128 GiB, the others vLLM's 4 GiB.
    num_host_blocks_by_policy: tuple[tuple[str, int], ...] = ()
    # What the numbers rest on, for humans and for the results file (free text and figures).
    assumptions: dict[str, Any] = dataclasses.field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("forward_base_s", "forward_time_scale"):  # an iteration of no time stalls the clock
            if not getattr(self, name) > 0:
                raise ValueError(f"profile {self.name!r}: {name} must be > 0, got {getattr(self, name)}")
        for name in _NONNEGATIVE_FIELDS:
            if not getattr(self, name) >= 0:
                raise ValueError(f"profile {self.name!r}: {name} must be >= 0, got {getattr(self, name)}")
        for name in ("saturation_tokens", "block_size_tokens", "num_device_blocks", "max_model_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"profile {self.name!r}: {name} must be >= 1, got {getattr(self, name)}")
        if self.num_host_blocks < 0:
            raise ValueError(f"profile {self.name!r}: num_host_blocks must be >= 0")
        _check_curve(self.name, self.forward_curve)
        if any(num_blocks < 0 for _, num_blocks in self.num_host_blocks_by_policy):
            raise ValueError(f"profile {self.name!r}: num_host_blocks_by_policy must be >= 0")

    def for_policy(self, policy: str) -> CostProfile:
        """This profile as the device that runs `policy` sees it: its host pool, if the profile
        gives that policy its own (num_host_blocks_by_policy)."""
        num_host_blocks = dict(self.num_host_blocks_by_policy).get(policy, self.num_host_blocks)
        return dataclasses.replace(self, num_host_blocks=num_host_blocks)

    # ----- costs -----

    def forward_s(self, num_tokens: int, num_context_tokens: float = 0) -> float:
        """Seconds of an iteration's forward pass computing `num_tokens` tokens whose sequences
        attend `num_context_tokens` cached tokens in all (0 for no tokens), as served."""
        if num_tokens <= 0:
            return 0.0
        return self.forward_fixed_s + self.forward_time_scale * self.profiled_forward_s(
            num_tokens, num_context_tokens
        )

    def profiled_forward_s(self, num_tokens: int, num_context_tokens: float = 0) -> float:
        """T_fwd + T_ctx: the forward pass as profiled, alone on the device (`num_tokens` >= 1)."""
        return self.tokens_s(num_tokens) + self.forward_s_per_context_token * num_context_tokens

    def tokens_s(self, num_tokens: int) -> float:
        """T_fwd as profiled: seconds of a forward pass of `num_tokens` >= 1 tokens from an empty
        context, alone on the device."""
        if not self.forward_curve:
            return self.forward_base_s + self.forward_s_per_token * max(
                num_tokens - self.saturation_tokens, 0
            )
        points = self.forward_curve
        if num_tokens >= points[-1][0]:
            return points[-1][1] + self.forward_s_per_token * (num_tokens - points[-1][0])
        index = bisect.bisect_right([tokens for tokens, _ in points], num_tokens)
        if index == 0:
            return points[0][1]
        (x0, t0), (x1, t1) = points[index - 1], points[index]
        return t0 + (t1 - t0) * (num_tokens - x0) / (x1 - x0)

    def overhead_s(
        self, num_sequences: int, num_context_tokens: float = 0, num_returned_tokens: int = 0
    ) -> float:
        """T_over: seconds an iteration of `num_sequences` sequences, attending `num_context_tokens`
        cached tokens in all and computing `num_returned_tokens` tool-returned tokens, spends
        outside the executor."""
        return (
            self.iteration_overhead_s
            + self.iteration_overhead_s_per_sequence * num_sequences
            + self.iteration_overhead_s_per_context_token * num_context_tokens
            + self.iteration_overhead_s_per_returned_token * num_returned_tokens
        )

    def swap_out_s(self, num_blocks: int) -> float:
        """Seconds to copy `num_blocks` blocks device -> host in one call (0 for none)."""
        return self.swap_fixed_s + num_blocks * self.swap_out_s_per_block if num_blocks > 0 else 0.0

    def swap_in_s(self, num_blocks: int) -> float:
        """Seconds to copy `num_blocks` blocks host -> device in one call (0 for none)."""
        return self.swap_fixed_s + num_blocks * self.swap_in_s_per_block if num_blocks > 0 else 0.0

    # ----- derived figures -----

    @property
    def swap_s_per_token(self) -> float:
        """Mean copy time of one token's KV in either direction, seconds."""
        return (self.swap_out_s_per_block + self.swap_in_s_per_block) / 2 / self.block_size_tokens

    def swap_budget_tokens(self, num_batched_tokens: int) -> float:
        """Tokens of KV (in and out together) that can be copied while an iteration of
        `num_batched_tokens` tokens computes: the per-iteration swap budget of DESIGN §5."""
        hidden_s = self.forward_s(num_batched_tokens) - self.swap_fixed_s
        if hidden_s <= 0:
            return 0.0
        return math.inf if self.swap_s_per_token == 0 else hidden_s / self.swap_s_per_token

    @property
    def num_device_tokens(self) -> int:
        return self.num_device_blocks * self.block_size_tokens

    @property
    def num_host_tokens(self) -> int:
        return self.num_host_blocks * self.block_size_tokens

    # ----- conversions -----

    def policy_cost_model(self) -> CostModel:
        """The cost model a scheduler on this device would build from its Profile: the
        flat-then-linear forward and the swap costs, without the simulator's refinements."""
        return CostModel(
            forward_base_s=self.forward_base_s,
            forward_s_per_token=self.forward_s_per_token,
            saturation_tokens=self.saturation_tokens,
            swap_out_s_per_block=self.swap_out_s_per_block,
            swap_in_s_per_block=self.swap_in_s_per_block,
            swap_fixed_s=self.swap_fixed_s,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CostProfile:
        """A profile from to_dict()'s keys (those with defaults may be missing: profiles saved
        before they existed keep loading); ValueError naming a missing or unknown key."""
        fields = dataclasses.fields(cls)
        optional = {f.name for f in fields if f.default is not MISSING or f.default_factory is not MISSING}
        unknown = sorted(set(values) - {f.name for f in fields})
        missing = sorted({f.name for f in fields} - set(values) - optional)
        if unknown or missing:
            raise ValueError(f"cost profile: unknown keys {unknown}, missing keys {missing}")
        curve = tuple((int(tokens), float(seconds)) for tokens, seconds in values.get("forward_curve", ()))
        host_pools = tuple((str(name), int(n)) for name, n in values.get("num_host_blocks_by_policy", ()))
        return cls(**{**values, "forward_curve": curve, "num_host_blocks_by_policy": host_pools})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> CostProfile:
        """The profile saved at `path`; OSError if unreadable, ValueError if malformed."""
        try:
            values = json.loads(Path(path).read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"cost profile {path}: not JSON ({error})") from error
        if not isinstance(values, dict):
            raise ValueError(f"cost profile {path}: expected a JSON object")
        return cls.from_dict(values)


def _check_curve(name: str, curve: tuple[tuple[int, float], ...]) -> None:
    tokens = [num_tokens for num_tokens, _ in curve]
    if tokens != sorted(set(tokens)) or (tokens and tokens[0] < 1):
        raise ValueError(f"profile {name!r}: forward_curve needs distinct ascending token counts >= 1")
    if not all(seconds > 0 for _, seconds in curve):
        raise ValueError(f"profile {name!r}: forward_curve times must be > 0")


def from_profile_response(
    response: pb.ProfileResponse,
    num_device_blocks: int,
    num_host_blocks: int,
    max_model_len: int,
    name: str = "",
) -> CostProfile:
    """A profile from the executor's measured cost model (Profile rpc) and its pool sizes
    (Describe), which the ProfileResponse does not carry. Its forward samples give the forward
    curve (those from an empty context) and the cost per context token (the decode samples'
    excess over the curve; see fit.py)."""
    samples = [
        ForwardSample(s.num_batched_tokens, s.context_tokens, s.num_requests, s.forward_s)
        for s in response.forward_samples
    ]
    profile = CostProfile(
        name=name or f"{response.model}@{response.device}",
        forward_base_s=response.forward_base_s,
        forward_s_per_token=response.forward_s_per_token,
        saturation_tokens=max(round(response.saturation_tokens), 1),
        swap_out_s_per_block=response.swap_out_s_per_block,
        swap_in_s_per_block=response.swap_in_s_per_block,
        swap_fixed_s=response.swap_fixed_s,
        block_size_tokens=response.block_size_tokens,
        num_device_blocks=num_device_blocks,
        num_host_blocks=num_host_blocks,
        max_model_len=max_model_len,
        forward_curve=forward_curve(samples),
        assumptions={
            "source": "measured by the executor's Profile rpc",
            "model": response.model,
            "device": response.device,
            "dtype": response.dtype,
            "from_cache": response.from_cache,
            "forward_samples": [list(dataclasses.astuple(sample)) for sample in samples],
            "forward_s_per_context_token": "least squares over the decode samples (fit.py)",
        },
    )
    return dataclasses.replace(
        profile, forward_s_per_context_token=context_s_per_token(samples, profile.tokens_s)
    )
