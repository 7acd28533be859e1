"""Duration estimators: how much longer a paused request's tool call will last (DESIGN §5).

The waste of preserving a context grows with the call's remaining time, which the scheduler cannot
know. Each estimator is a small class behind one interface, chosen by name from ESTIMATORS:

    oracle   the client's hint (ToolStarted / the tool spec's expected duration) minus the elapsed time
    elapsed  the paper's §4.4: the call will last as long again as it has already lasted
    history  the expected remaining time under the durations this tool's calls took recently
"""

from __future__ import annotations

import abc
import bisect
import collections
import math
from collections import deque
from typing import ClassVar


class DurationEstimator(abc.ABC):
    """Estimates a tool call's remaining time. Deterministic given the calls to `observe`."""

    name: ClassVar[str]

    @abc.abstractmethod
    def remaining_s(self, tool: str, elapsed_s: float, hint_s: float) -> float:
        """Expected seconds until the call of `tool`, running for `elapsed_s` seconds, returns;
        >= 0. `hint_s` is the client's expected total duration of the call, 0 for none."""

    def observe(self, tool: str, duration_s: float) -> None:  # noqa: B027 (optional hook)
        """A call of `tool` ended after `duration_s` seconds. Estimators that do not learn ignore it."""


def _from_hint(elapsed_s: float, hint_s: float) -> float:
    """max(hint - elapsed, 0) when a hint is given, else elapsed (the paper's estimate)."""
    elapsed_s = max(elapsed_s, 0.0)
    if hint_s > 0:
        return max(hint_s - elapsed_s, 0.0)
    return elapsed_s


class OracleEstimator(DurationEstimator):
    """remaining = max(hint - elapsed, 0); a call without a hint falls back to remaining = elapsed.
    A call that outlives its hint is expected to return now (0), as an oracle would say."""

    name = "oracle"

    def remaining_s(self, tool: str, elapsed_s: float, hint_s: float) -> float:
        return _from_hint(elapsed_s, hint_s)


class ElapsedEstimator(DurationEstimator):
    """remaining = elapsed (InferCept §4.4): hints are ignored."""

    name = "elapsed"

    def remaining_s(self, tool: str, elapsed_s: float, hint_s: float) -> float:
        return max(elapsed_s, 0.0)


class _ToolDurations:
    """The last `window` durations of one tool, kept sorted with suffix sums.

    observe: O(window) (a sorted-list insert and, once full, a delete); the suffix sums are rebuilt
    lazily, O(window), on the first query after a change. Queries in between are O(log window).
    """

    def __init__(self, window: int) -> None:
        self._in_order: deque[float] = deque()  # oldest first, to know which sample leaves the window
        self._sorted: list[float] = []
        self._suffix_sums: list[float] = [0.0]  # _suffix_sums[i] = sum(_sorted[i:]); stale if dirty
        self._is_dirty = False
        self._window = window

    def __len__(self) -> int:
        return len(self._sorted)

    def add(self, duration_s: float) -> None:
        self._in_order.append(duration_s)
        bisect.insort(self._sorted, duration_s)
        if len(self._in_order) > self._window:
            oldest = self._in_order.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, oldest)]
        self._is_dirty = True

    def mean_excess_s(self, elapsed_s: float) -> float | None:
        """mean(d - elapsed) over the durations d > elapsed; None if there are none."""
        if self._is_dirty:
            self._rebuild_suffix_sums()
        first = bisect.bisect_right(self._sorted, elapsed_s)
        num_longer = len(self._sorted) - first
        if num_longer == 0:
            return None
        return self._suffix_sums[first] / num_longer - elapsed_s

    def quantile_s(self, p: float) -> float:
        """The nearest-rank p-quantile of the recorded durations (at least one recorded)."""
        rank = max(math.ceil(p * len(self._sorted)), 1)
        return self._sorted[min(rank, len(self._sorted)) - 1]

    def _rebuild_suffix_sums(self) -> None:
        sums = [0.0] * (len(self._sorted) + 1)
        for i in range(len(self._sorted) - 1, -1, -1):
            sums[i] = sums[i + 1] + self._sorted[i]
        self._suffix_sums = sums
        self._is_dirty = False


class HistoryEstimator(DurationEstimator):
    """Learns each tool's durations online (a window of the last `window` calls per tool):

        remaining(elapsed) = mean over recorded durations d > elapsed of (d - elapsed)

    i.e. the expected remaining time given that the call has already lasted `elapsed`. Fallbacks:
    fewer than `min_samples` calls recorded for the tool -> as oracle (the hint if given, else
    elapsed); the call has outlived every recorded duration -> elapsed. Tools are learned apart.
    remaining_s is O(log window) between observations (see _ToolDurations). At most `max_tools`
    tools are remembered: a new one evicts the least recently used, so clients inventing tool
    names cannot grow the state without bound (memory O(max_tools * window)).
    """

    name = "history"

    def __init__(self, window: int = 512, min_samples: int = 8, max_tools: int = 256) -> None:
        if window < 1 or min_samples < 1 or max_tools < 1:
            raise ValueError(
                f"history estimator: window {window}, min_samples {min_samples} and max_tools {max_tools} "
                "must be >= 1"
            )
        self.window = window
        self.min_samples = min(min_samples, window)  # more than the window could never be reached
        self.max_tools = max_tools
        self._durations: collections.OrderedDict[str, _ToolDurations] = collections.OrderedDict()

    def remaining_s(self, tool: str, elapsed_s: float, hint_s: float) -> float:
        elapsed_s = max(elapsed_s, 0.0)
        durations = self._durations.get(tool)
        if durations is not None:
            self._durations.move_to_end(tool)  # recently used
        if durations is None or len(durations) < self.min_samples:
            return _from_hint(elapsed_s, hint_s)
        excess_s = durations.mean_excess_s(elapsed_s)
        # The call outlived everything seen: the history has nothing to say, the paper's rule does.
        return elapsed_s if excess_s is None else max(excess_s, 0.0)

    def quantile_s(self, tool: str, p: float) -> float | None:
        """The p-quantile (0 < p <= 1) of the tool's recorded durations, seconds; None with fewer
        than `min_samples` recorded (the history has nothing to say yet)."""
        durations = self._durations.get(tool)
        if durations is None or len(durations) < self.min_samples:
            return None
        return durations.quantile_s(p)

    def observe(self, tool: str, duration_s: float) -> None:
        """Record a finished call; a negative or non-finite duration (a clock bug) is ignored."""
        if not (math.isfinite(duration_s) and duration_s >= 0):
            return
        if tool not in self._durations:
            if len(self._durations) >= self.max_tools:
                self._durations.popitem(last=False)  # the least recently used tool
            self._durations[tool] = _ToolDurations(self.window)
        self._durations.move_to_end(tool)
        self._durations[tool].add(duration_s)

    @property
    def num_tools(self) -> int:
        """Tools whose durations are remembered (at most max_tools)."""
        return len(self._durations)


ESTIMATORS: dict[str, type[DurationEstimator]] = {
    estimator.name: estimator for estimator in (OracleEstimator, ElapsedEstimator, HistoryEstimator)
}


def create_estimator(name: str) -> DurationEstimator:
    """The estimator called `name`, with its default settings; ValueError naming the choices otherwise."""
    if name not in ESTIMATORS:
        raise ValueError(f"unknown duration estimator {name!r}; choose one of {sorted(ESTIMATORS)}")
    return ESTIMATORS[name]()
