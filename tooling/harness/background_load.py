"""How much of the machine other processes used while a measurement ran.

A real run on a shared machine is slowed by whatever else runs on its cores; the simulator,
calibrated a moment earlier, is not. The fidelity check reports this share so that a
disagreement caused by a neighbour is not read as the simulator's fault:

    other = machine busy CPU time (including time stolen by the hypervisor)
            - this process's and its finished children's CPU time

Linux only (/proc/stat); elsewhere the share is unknown (None).
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

PROC_STAT = Path("/proc/stat")
IDLE_FIELDS = (3, 4)  # idle, iowait in the "cpu" line's fields after its name


@dataclasses.dataclass(frozen=True)
class CpuSnapshot:
    machine_busy_s: float  # CPU seconds the whole machine was busy since boot
    own_s: float  # CPU seconds of this process and its waited-for children
    wall_s: float  # time.monotonic()


def snapshot() -> CpuSnapshot | None:
    """The counters now; None where /proc/stat cannot be read."""
    try:
        fields = PROC_STAT.read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    jiffies = [int(value) for value in fields[:8]]  # user .. steal; guest time is inside user
    busy = sum(value for index, value in enumerate(jiffies) if index not in IDLE_FIELDS)
    times = os.times()
    own_s = times.user + times.system + times.children_user + times.children_system
    return CpuSnapshot(busy / os.sysconf("SC_CLK_TCK"), own_s, time.monotonic())


def other_share(before: CpuSnapshot | None, after: CpuSnapshot | None) -> float | None:
    """The share of the machine's CPU capacity that other processes used between the two
    snapshots (0..1), or None if either is unknown."""
    if before is None or after is None or after.wall_s <= before.wall_s:
        return None
    capacity_s = (after.wall_s - before.wall_s) * (os.cpu_count() or 1)
    other_s = (after.machine_busy_s - before.machine_busy_s) - (after.own_s - before.own_s)
    return min(max(other_s / capacity_s, 0.0), 1.0)
