"""What `auto` picks on this device: every attention backend on the selection's trial batch
(measured now, not from the cache) for a few head shapes and dtypes, with the choice.

    python -m benchmarks.backend_selection [--device cuda]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from executor_svc.attention.selection import HeadShape, select_backend
from executor_svc.config import DTYPES

SHAPES = {
    "default model (8/4 heads, dim 32)": HeadShape(8, 4, 32, 16),
    "bench large (8/4 heads, dim 64)": HeadShape(8, 4, 64, 16),
    "Llama-3-8B (32/8 heads, dim 128)": HeadShape(32, 8, 128, 16),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtypes", default="bfloat16,float32")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"# attention backend selection on {device} (torch {torch.__version__})")
    print(f"{'shape':<36} {'dtype':<9} {'backend':<8} {'rel error':>10} {'ms':>8}  chosen")
    with tempfile.TemporaryDirectory() as cache:
        for label, shape in SHAPES.items():
            for dtype_name in args.dtypes.split(","):
                dtype = DTYPES[dtype_name]
                if device.type == "cpu" and dtype != torch.float32:
                    continue
                chosen, trials = select_backend(device, dtype, shape, Path(cache), refresh=True)
                for trial in trials:
                    mark = "<-" if trial.name == chosen else ""
                    print(
                        f"{label:<36} {dtype_name:<9} {trial.name:<8} {trial.rel_error:>10.2e} "
                        f"{trial.seconds * 1e3:>8.3f}  {mark}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
