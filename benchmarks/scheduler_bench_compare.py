"""The scheduler benchmark in two source trees side by side: run in turn, figures and ratios.

    python -m benchmarks.scheduler_bench_compare --old DIR [--new DIR] [--rounds 3] [--iterations 200]

DIR is a checkout of another commit (e.g. `git archive COMMIT | tar -x -C DIR`). Each round runs
`python -m benchmarks.scheduler_bench` with this interpreter in the old tree, then in the new one
(the tree's own packages come first on the path: it runs from its directory), so that the load of
a shared machine hits both alike; the load average is read before each run. Printed per request
count: each side's median over the rounds and the median of the pairwise ratios new / old, for the
core's schedule + update and for the pipelined round trip's overhead.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import subprocess
import sys
from pathlib import Path

CORE_TITLE = "# scheduler core"
ROUND_TRIP_TITLE = "# plan/result round trip"


@dataclasses.dataclass(frozen=True)
class BenchRun:
    """One run's figures by request count: the core's schedule + update and the pipelined
    round trip's overhead, milliseconds; the load average before it; and the executor's own idle
    time per pipelined step, mean and median, milliseconds (empty from a tree that does not
    measure it)."""

    core_ms: dict[int, float]
    pipelined_ms: dict[int, float]
    load: float
    idle_ms: dict[int, tuple[float, float]] = dataclasses.field(default_factory=dict)


def table(output: str, title: str) -> list[dict[str, str]]:
    """The rows of the table under the line starting with `title`, keyed by its header's columns
    (multi-word column names are the header's text split at runs of two or more spaces)."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title)) + 1
    while not lines[start].strip():
        start += 1
    columns = [name.strip() for name in lines[start].split("  ") if name.strip()]
    rows = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        rows.append(dict(zip(columns, line.split(), strict=True)))
    return rows


def parse(output: str, load: float) -> BenchRun:
    """The figures of one scheduler_bench output."""
    core = {int(row["requests"]): float(row["total ms"]) for row in table(output, CORE_TITLE)}
    round_trip = table(output, ROUND_TRIP_TITLE)
    pipelined = {int(row["requests"]): float(row["pipelined overhead ms"]) for row in round_trip}
    idle = {
        int(row["requests"]): (float(row["pipelined idle ms"]), float(row["idle median ms"]))
        for row in round_trip
        if "idle median ms" in row
    }
    return BenchRun(core, pipelined, load, idle)


def run_tree(tree: Path, iterations: int) -> BenchRun:
    load = os.getloadavg()[0]
    command = [sys.executable, "-m", "benchmarks.scheduler_bench", "--iterations", str(iterations)]
    done = subprocess.run(command, cwd=tree, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"the benchmark failed in {tree} (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return parse(done.stdout, load)


def summary(old: list[BenchRun], new: list[BenchRun], figure: str) -> list[str]:
    """Per request count: medians each side and the median pairwise ratio of `figure`."""
    lines = [f"{'requests':>9} {'old ms':>8} {'new ms':>8} {'new/old':>8}   (median of {len(old)} pairs)"]
    for count in getattr(old[0], figure):
        olds = [getattr(run, figure)[count] for run in old]
        news = [getattr(run, figure)[count] for run in new]
        ratios = [n / o for n, o in zip(news, olds, strict=True) if o > 0]
        ratio = statistics.median(ratios) if ratios else float("nan")
        lines.append(
            f"{count:>9} {statistics.median(olds):>8.3f} {statistics.median(news):>8.3f} {ratio:>8.2f}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--old", type=Path, required=True, help="the old tree")
    parser.add_argument("--new", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=200)
    args = parser.parse_args()
    old: list[BenchRun] = []
    new: list[BenchRun] = []
    for round_ in range(args.rounds):
        for tree, runs in ((args.old, old), (args.new, new)):
            runs.append(run_tree(tree, args.iterations))
            print(f"round {round_ + 1} {tree}: load {runs[-1].load:.1f}", flush=True)
    loads = [run.load for run in old + new]
    print(f"\nload average before the runs: {min(loads):.1f}-{max(loads):.1f}")
    print("\n# schedule + update per iteration, ms")
    print("\n".join(summary(old, new, "core_ms")))
    print("\n# pipelined round trip: wall time per step minus the executor's step, ms")
    print("\n".join(summary(old, new, "pipelined_ms")))
    if all(run.idle_ms for run in new):
        print("\n# the new tree's executor idle per pipelined step, ms: medians over the runs")
        print(f"{'requests':>9} {'mean':>8} {'median':>8}")
        for count in new[0].idle_ms:
            means, medians = zip(*(run.idle_ms[count] for run in new), strict=True)
            print(f"{count:>9} {statistics.median(means):>8.3f} {statistics.median(medians):>8.3f}")


if __name__ == "__main__":
    main()
