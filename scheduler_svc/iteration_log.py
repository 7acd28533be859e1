"""The per-iteration log: one JSON object per iteration (IterationStats), for benchmarks.

    infercept-scheduler --iteration-log iterations.jsonl ...

Lines are buffered and flushed every FLUSH_EVERY iterations and on close, so the log costs the
step loop a dict conversion and a buffered write per iteration.
"""

from __future__ import annotations

import json
from pathlib import Path

from google.protobuf import json_format

from scheduler_svc.iteration_stats import IterationStats
from scheduler_svc.stats_render import iteration_proto

FLUSH_EVERY = 100


class IterationLog:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("w", encoding="utf-8")
        self._count = 0

    def __call__(self, iteration: IterationStats) -> None:
        """Append `iteration` (fields named as in the proto, zeros included)."""
        record = json_format.MessageToDict(
            iteration_proto(iteration),
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
        )
        self._file.write(json.dumps(record) + "\n")
        self._count += 1
        if self._count % FLUSH_EVERY == 0:
            self._file.flush()

    def close(self) -> None:
        self._file.close()
