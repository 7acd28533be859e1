"""One load run against a live deployment: the workload's plans, run in real time, measured over
the window, as a RunRecord (and a one-screen summary)."""

from __future__ import annotations

import dataclasses

from infercept.async_client import AsyncClient
from tooling.loadgen.metrics import run_record
from tooling.loadgen.runner import RunResult, run_plans
from tooling.loadgen.truncation import count_prompt_only
from tooling.loadgen.workload_spec import WorkloadSpec, plans_for
from tooling.run_record import Distribution, RunRecord

SERVER_INFO_TIMEOUT_S = 30.0


@dataclasses.dataclass(frozen=True)
class Target:
    """The deployment a run drives, and how to reach it."""

    address: str  # the scheduler, HOST:PORT
    root_certificates: bytes | None = None  # PEM CA of its certificate: TLS; None: plaintext
    token: str | None = None  # the bearer token presented on every call


async def run_load(target: Target, workload: WorkloadSpec, policy_label: str | None = None) -> RunRecord:
    """Run `workload` against `target`; print the summary; return the record, labelled with
    `policy_label` (default: the server's policy). Raises InferceptError, ValueError, OSError."""
    async with AsyncClient(
        target.address, root_certificates=target.root_certificates, token=target.token
    ) as client:
        info = await client.server_info(timeout_s=SERVER_INFO_TIMEOUT_S)
        max_model_len = workload.max_model_len or info.max_model_len
        plans, plan_assumptions = plans_for(workload, max_model_len)
        note = _prompt_only_note(count_prompt_only(plans, max_model_len))
        print(
            f"infercept-loadgen: {len(plans)} requests of {workload.workload} at {workload.rate:g}/s, "
            f"warm-up {workload.warmup_s:g} s, window {workload.duration_s:g} s, against {target.address} "
            f"({info.model}, policy {info.policy}, max length {max_model_len}){note}",
            flush=True,
        )
        result = await run_plans(
            client,
            plans,
            warmup_s=workload.warmup_s,
            duration_s=workload.duration_s,
            vocab_size=info.vocab_size,
            seed=workload.seed,
        )
    policy = policy_label or info.policy
    stats = (result.stats_before, result.stats_after)
    assumptions = {**plan_assumptions, "vocab_size": info.vocab_size}
    record = run_record("loadgen", policy, workload, result.records, stats, assumptions)
    print(format_summary(record, result))
    return record


def _prompt_only_note(num_prompt_only: int) -> str:
    """The header's word on the requests truncation left only their prompt; none: nothing."""
    if not num_prompt_only:
        return ""
    return f"; {num_prompt_only} of them reach it with their prompt (one token each, no call)"


def format_summary(record: RunRecord, result: RunResult) -> str:
    """One screen: what ran, what completed, latency, throughput, the server's work."""

    def stats(d: Distribution, unit: str) -> str:
        parts = [
            f"{key} {value:.4g}" if value is not None else f"{key} -" for key, value in d.to_json().items()
        ]
        return "  ".join(parts) + f"  ({unit})"

    server, summary = record.server, record.summary
    errors = ", ".join(f"{count} {code}" for code, count in sorted(result.errors.items())) or "none"
    lines = [
        f"workload {record.workload}  rate {record.rate:g}/s  window {record.duration_s:g} s  "
        f"policy {record.policy}  seed {record.seed}",
        f"requests   {summary.submitted} submitted, {summary.completed} completed "
        f"({summary.completed_per_s:.3g}/s), {result.num_unfinished} still running at the end "
        f"(cancelled), failed: {errors}; {result.num_warmup_requests} warm-up requests not measured",
        f"latency    {stats(summary.normalized_latency_s_per_token, 's/token, normalized')}",
        f"TTFT       {stats(summary.ttft_s, 's')}",
        f"throughput {summary.output_tokens_per_s:.1f} generated tokens/s",
        f"server     {server.forward_tokens} forward tokens, {server.recomputed_tokens} recomputed "
        f"({server.recompute_share:.1%} of forward tokens; of forward time: "
        f"{_time_share(server.recompute_time_share)}), swapped blocks {server.swap_out_blocks} out / "
        f"{server.swap_in_blocks} in, {server.paused_device_block_seconds:.1f} paused "
        "device block-s",
    ]
    return "\n".join(lines)


def _time_share(value: float | None) -> str:
    return "not counted by this server" if value is None else f"{value:.1%}"
