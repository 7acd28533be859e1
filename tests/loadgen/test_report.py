"""Sweep reporting: max sustainable rate, the table, the plot; and a real two-policy sweep."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tooling.loadgen.main import main
from tooling.loadgen.report import max_sustainable_rates, plot_latency, sweep_table
from tooling.run_record import Distribution, RunRecord, ServerDelta, Summary


def record(policy: str, rate: float, mean: float | None) -> RunRecord:
    latency = Distribution(mean, mean, mean, mean)
    summary = Summary(10, 9, rate * 0.9, 0, latency, Distribution(), 1.0)
    server = ServerDelta(100, 25, 0.25, None, 3, 0, 0.0)
    return RunRecord("sim", policy, "mixed", rate, 10.0, 0, summary, server, {})


RECORDS = [
    record("vllm", 1.0, 0.05), record("vllm", 2.0, 0.3), record("vllm", 3.0, 0.1),
    record("infercept", 1.0, 0.04), record("infercept", 2.0, 0.08), record("infercept", 3.0, 0.19),
    record("swap", 1.0, 0.5), record("swap", 2.0, None),
]  # fmt: skip


def test_max_sustainable_rate_stops_at_the_first_rate_over_the_slo() -> None:
    # vllm's 3/s is under the SLO again, but 2/s was not: 1/s is what it sustains.
    assert max_sustainable_rates(RECORDS, 0.2) == {"vllm": 1.0, "infercept": 3.0, "swap": None}
    assert max_sustainable_rates(RECORDS, 0.01) == {"vllm": None, "infercept": None, "swap": None}


def test_table_lists_every_run_and_the_ratio_to_vllm() -> None:
    table = sweep_table(RECORDS, 0.2)
    assert table.count("\n") >= len(RECORDS) + 4
    assert "infercept          3/s  (3.00x vllm)" in table
    assert "swap               none" in table
    # At 2/s infercept completes as many per second as vllm (both rate × 0.9) at 0.08 / 0.3 of
    # its latency; swap's latency there is unknown.
    assert "infercept             2.00    1.00x     0.27x" in table
    assert "swap                  2.00    1.00x         -" in table


def test_long_policy_labels_widen_the_table() -> None:
    label = "infercept/no-chunked-recompute"
    table = sweep_table([*RECORDS, record(label, 1.0, 0.06)], 0.2)
    assert f"{label}    1.00" in table
    assert f"{label}    1.00    1.00x     1.20x" in table


def test_plot_is_a_png(tmp_path: Path) -> None:
    path = tmp_path / "plots" / "sweep.png"
    plot_latency(RECORDS, path, 0.2)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_sweep_over_two_policies_on_fresh_stacks(tmp_path: Path, capsys: Any) -> None:
    out, plot = tmp_path / "sweep.json", tmp_path / "sweep.png"
    args = [
        "--launch",
        "--device",
        "cpu",
        "--num-device-blocks",
        "64",
        "--workload",
        "math",
        "--rates",
        "2,4",
        "--statistics",
        "table1",
    ]
    args += ["--policies", "vllm,swap", "--duration", "2", "--warmup", "0", "--max-model-len", "128"]
    args += ["--out", str(out), "--plot", str(plot), "--log-dir", str(tmp_path / "logs")]
    assert main(args) == 0
    records = json.loads(out.read_text())
    assert [(r["policy"], r["rate"]) for r in records] == [
        ("vllm", 2.0),
        ("vllm", 4.0),
        ("swap", 2.0),
        ("swap", 4.0),
    ]
    assert all(r["tool"] == "loadgen" and r["submitted"] > 0 for r in records)
    assert plot.is_file() and "max sustainable rate" in capsys.readouterr().out
