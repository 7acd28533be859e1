"""Whether `auto` picked what the GPU check measured faster: read from the executor benchmark's output.

    python -m benchmarks.gpu_check_verdict DIR

DIR holds the GPU check's figures (`benchmarks/gpu_check.sh`); its `executor-bench.txt` was run with
`auto` as the first backend, so each model's heading names the backend an executor picks there
(on CUDA: measured by the selection at start-up). Per model, the whole decode steps of every other
backend are summed over the batch sizes; the verdict says whether the pick is the fastest of
them (within `--tolerance`, since `auto` itself was timed in the same rotation and differs only by
noise). Prints one line per model; exit status 1 if any pick is slower, 2 if nothing was read.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path

_HEADING = re.compile(r"^## (?P<model>\S+): .*\(auto: (?P<picked>\w+)\)\s*$")


@dataclasses.dataclass(frozen=True)
class ModelFigures:
    """One model's decode steps: the backend `auto` picked, and each backend's summed step, ms."""

    model: str
    picked: str
    total_ms: dict[str, float]


def read_figures(text: str) -> list[ModelFigures]:
    """The models of an executor_bench output whose heading names auto's pick."""
    figures: list[ModelFigures] = []
    lines = text.splitlines()
    for index, line in enumerate(lines):
        heading = _HEADING.match(line)
        if heading is None or index + 1 >= len(lines):
            continue
        columns = lines[index + 1].split()  # batch context <b> ms <b>/dense ... dense ms tok/s
        backends = [
            columns[i - 1] for i, word in enumerate(columns) if word == "ms" and columns[i - 1] != "dense"
        ]
        totals = dict.fromkeys(backends, 0.0)
        for row in lines[index + 2 :]:
            values = row.split()
            if not values or not values[0].isdigit():
                break
            for position, backend in enumerate(backends):
                totals[backend] += float(values[2 + 2 * position])
        figures.append(ModelFigures(heading["model"], heading["picked"], totals))
    return figures


def verdict(figures: ModelFigures, tolerance: float) -> tuple[bool, str]:
    """Whether the pick is the fastest backend measured (within `tolerance`), and a line saying so."""
    # The pick's own column where it was measured by name too, else auto's.
    others = {name: ms for name, ms in figures.total_ms.items() if name not in ("auto", figures.picked)}
    picked_ms = figures.total_ms.get(figures.picked, figures.total_ms["auto"])
    fastest = min(others, key=others.__getitem__, default=figures.picked)
    is_fastest = not others or picked_ms <= others[fastest] * (1 + tolerance)
    sums = ", ".join(f"{name} {ms:.2f}" for name, ms in {figures.picked: picked_ms, **others}.items())
    word = "the fastest" if is_fastest else f"SLOWER than {fastest}"
    return (
        is_fastest,
        f"{figures.model}: auto picked {figures.picked}, {word} (decode steps summed, ms: {sums})",
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("figures_dir", type=Path)
    parser.add_argument("--tolerance", type=float, default=0.05, help="relative slack of the pick")
    args = parser.parse_args()
    bench = args.figures_dir / "executor-bench.txt"
    figures = read_figures(bench.read_text()) if bench.exists() else []
    if not figures:
        print(f"no model with auto's pick in {bench}: nothing to judge")
        sys.exit(2)
    results = [verdict(model, args.tolerance) for model in figures]
    for _, line in results:
        print(line)
    sys.exit(0 if all(ok for ok, _ in results) else 1)


if __name__ == "__main__":
    main()
