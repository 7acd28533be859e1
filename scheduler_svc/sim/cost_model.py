"""The simulator's cost model: how long an iteration takes on a virtual device.

    T_fwd(x)   = forward_base_s                                      for 0 < x <= S
               = forward_base_s + forward_s_per_token * (x - S)      for x > S
    T_fwd(0)   = 0                                                   (no forward pass is run)
    T_out(n)   = swap_fixed_s + n * swap_out_s_per_block             for n > 0 blocks, else 0
    T_in(n)    = swap_fixed_s + n * swap_in_s_per_block              for n > 0 blocks, else 0

x is the number of tokens computed in the iteration (all requests together), S the saturation
point: below it the device is not compute-bound, so more tokens cost nothing (DESIGN §5). This is
the same model as the executor's ProfileResponse, so a profile measured by the real executor can
drive the simulator unchanged (from_profile_response, save/load as JSON). Named profiles with
their stated assumptions live in `profiles.py`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from infercept.v1 import executor_pb2 as pb


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
    # What the numbers rest on, for humans and for the results file (free text and figures).
    assumptions: dict[str, Any] = dataclasses.field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        if not self.forward_base_s > 0:  # an iteration that takes no time would stall the clock
            raise ValueError(f"profile {self.name!r}: forward_base_s must be > 0, got {self.forward_base_s}")
        for name in ("forward_s_per_token", "swap_out_s_per_block", "swap_in_s_per_block", "swap_fixed_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"profile {self.name!r}: {name} must be >= 0, got {getattr(self, name)}")
        for name in ("saturation_tokens", "block_size_tokens", "num_device_blocks", "max_model_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"profile {self.name!r}: {name} must be >= 1, got {getattr(self, name)}")
        if self.num_host_blocks < 0:
            raise ValueError(f"profile {self.name!r}: num_host_blocks must be >= 0")

    # ----- costs -----

    def forward_s(self, num_tokens: int) -> float:
        """T_fwd: seconds of an iteration computing `num_tokens` tokens (0 for none)."""
        if num_tokens <= 0:
            return 0.0
        return self.forward_base_s + self.forward_s_per_token * max(num_tokens - self.saturation_tokens, 0)

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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CostProfile:
        """A profile from to_dict()'s keys; ValueError naming a missing or unknown key."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        missing = sorted(fields - set(values) - {"assumptions"})
        if unknown or missing:
            raise ValueError(f"cost profile: unknown keys {unknown}, missing keys {missing}")
        return cls(**values)

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


def from_profile_response(
    response: pb.ProfileResponse,
    num_device_blocks: int,
    num_host_blocks: int,
    max_model_len: int,
    name: str = "",
) -> CostProfile:
    """A profile from the executor's measured cost model (Profile rpc) and its pool sizes
    (Describe), which the ProfileResponse does not carry."""
    return CostProfile(
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
        assumptions={
            "source": "measured by the executor's Profile rpc",
            "model": response.model,
            "device": response.device,
            "dtype": response.dtype,
            "from_cache": response.from_cache,
            "forward_samples": [
                [s.num_batched_tokens, s.context_tokens, s.num_requests, s.forward_s]
                for s in response.forward_samples
            ],
        },
    )
