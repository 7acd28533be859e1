"""What one run measured (RunRecord), the one results schema of the load generator and the
simulator, so that a simulated run compares field for field with a measured one.

    RunRecord      the run's settings, its client-side metrics (Summary), the server's work in the
                   window (ServerDelta) and every assumption that shaped it
    Summary        submitted and completed requests, completed/s, normalized latency and TTFT
                   distributions, output tokens/s (definitions: loadgen/metrics.py)
    ServerDelta    the server's counters between the window's edges
    Distribution   mean and 50th/90th/99th percentiles; None each when there were no values

`to_json` writes the results file's schema (the keys as they have always been: a flat record with
`server` and `assumptions` objects); `from_json` reads one back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

TOOLS = ("loadgen", "sim")
# The assumptions that shaped a run: a JSON object, written as it is and never read by the code.
Assumptions = Mapping[str, object]


@dataclasses.dataclass(frozen=True)
class Distribution:
    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None

    def to_json(self) -> dict[str, float | None]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_json(value: Mapping[str, Any]) -> Distribution:
        return Distribution(
            **{field: _optional_float(value[field]) for field in ("mean", "p50", "p90", "p99")}
        )


@dataclasses.dataclass(frozen=True)
class Summary:
    """Client-side metrics of the requests that arrived in the window (loadgen/metrics.summarize)."""

    submitted: int
    completed: int
    completed_per_s: float
    unfinished_counted: int  # unfinished requests counted in the latency (count_unfinished)
    normalized_latency_s_per_token: Distribution
    ttft_s: Distribution
    output_tokens_per_s: float


@dataclasses.dataclass(frozen=True)
class ServerDelta:
    """The server's work between two GetStats snapshots (loadgen/metrics.server_delta)."""

    forward_tokens: int  # prompt + decode + returned + recomputed
    recomputed_tokens: int
    recompute_share: float  # of forward tokens; 0 when nothing ran
    recompute_time_share: float | None  # of forward time; None when the server does not count it
    swap_out_blocks: int
    swap_in_blocks: int
    paused_device_block_seconds: float

    def to_json(self) -> dict[str, float | int | None]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class RunRecord:
    tool: str  # "loadgen" (a live deployment) or "sim" (the simulator)
    policy: str  # the policy, or the policy spec's label (infercept/no-swap-budget)
    workload: str
    rate: float  # requests/s
    duration_s: float  # the measurement window
    seed: int
    summary: Summary
    server: ServerDelta
    assumptions: Assumptions

    def __post_init__(self) -> None:
        if self.tool not in TOOLS:
            raise ValueError(f"tool must be one of {TOOLS}, got {self.tool!r}")

    @property
    def mean_latency_s_per_token(self) -> float | None:
        return self.summary.normalized_latency_s_per_token.mean

    def labelled(self, policy: str) -> RunRecord:
        """The same record under another policy label."""
        return dataclasses.replace(self, policy=policy)

    def to_json(self) -> dict[str, object]:
        """The results file's record."""
        summary = self.summary
        return {
            "tool": self.tool,
            "policy": self.policy,
            "workload": self.workload,
            "rate": float(self.rate),
            "duration_s": float(self.duration_s),
            "seed": int(self.seed),
            "submitted": summary.submitted,
            "completed": summary.completed,
            "completed_per_s": summary.completed_per_s,
            "unfinished_counted": summary.unfinished_counted,
            "normalized_latency_s_per_token": summary.normalized_latency_s_per_token.to_json(),
            "ttft_s": summary.ttft_s.to_json(),
            "output_tokens_per_s": summary.output_tokens_per_s,
            "server": self.server.to_json(),
            "assumptions": dict(self.assumptions),
        }

    @staticmethod
    def from_json(value: Mapping[str, Any]) -> RunRecord:
        """A record as to_json wrote it. Raises KeyError or ValueError for another shape."""
        summary = Summary(
            submitted=int(value["submitted"]),
            completed=int(value["completed"]),
            completed_per_s=float(value["completed_per_s"]),
            unfinished_counted=int(value.get("unfinished_counted", 0)),
            normalized_latency_s_per_token=Distribution.from_json(value["normalized_latency_s_per_token"]),
            ttft_s=Distribution.from_json(value["ttft_s"]),
            output_tokens_per_s=float(value["output_tokens_per_s"]),
        )
        server = value["server"]
        return RunRecord(
            tool=str(value["tool"]),
            policy=str(value["policy"]),
            workload=str(value["workload"]),
            rate=float(value["rate"]),
            duration_s=float(value["duration_s"]),
            seed=int(value["seed"]),
            summary=summary,
            server=ServerDelta(
                forward_tokens=int(server["forward_tokens"]),
                recomputed_tokens=int(server["recomputed_tokens"]),
                recompute_share=float(server["recompute_share"]),
                recompute_time_share=_optional_float(server.get("recompute_time_share")),
                swap_out_blocks=int(server["swap_out_blocks"]),
                swap_in_blocks=int(server["swap_in_blocks"]),
                paused_device_block_seconds=float(server["paused_device_block_seconds"]),
            ),
            assumptions=dict(value["assumptions"]),
        )


def _optional_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]
