"""How many CPU cores other processes keep busy, measured from /proc/stat.

Two samples of the CPUs' busy time (on the CPUs this process may run on) and of this process's
own CPU time; the busy time that is not ours, over the wall time between the samples, is the
other work in cores. Where /proc/stat is missing (macOS, Windows) nothing is measured: None.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

PROC_STAT = Path("/proc/stat")
# The columns of a /proc/stat cpu line that are not busy: idle, iowait (waiting is not working)
# and steal (the hypervisor ran someone else: not work on this machine's processes).
_IDLE_COLUMNS = (3, 4, 7)
# Long enough for a few scheduler ticks on every CPU, short enough to go unnoticed at start.
START_WINDOW_SECONDS = 0.1


@dataclass(frozen=True)
class CpuSample:
    wall: float  # monotonic seconds
    busy_seconds: float  # all processes, on the CPUs we may run on
    own_seconds: float  # this process, all its threads


def busy_ticks(stat_text: str, cpus: Collection[int] | None) -> int | None:
    """Busy clock ticks summed over `cpus` (None: the all-CPU line); None when unreadable."""
    total = 0
    seen = False
    for line in stat_text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu"):
            continue
        if cpus is None and name != "cpu":
            continue
        if cpus is not None and (name == "cpu" or int(name[3:]) not in cpus):
            continue
        columns = [int(x) for x in rest.split()]
        # guest time is already counted inside user time; the first eight columns hold it all.
        total += sum(v for i, v in enumerate(columns[:8]) if i not in _IDLE_COLUMNS)
        seen = True
    return total if seen else None


def _read_proc_stat() -> str | None:
    try:
        return PROC_STAT.read_text()
    except OSError:
        return None


def _own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def _allowed_cpus() -> frozenset[int] | None:
    getaffinity = getattr(os, "sched_getaffinity", None)  # Linux only
    return frozenset(getaffinity(0)) if getaffinity else None


class LoadMeter:
    """Samples CPU time; the readers are injectable so tests can fake /proc/stat and a clock."""

    def __init__(self, read_stat: Callable[[], str | None] = _read_proc_stat,
                 own_cpu_seconds: Callable[[], float] = _own_cpu_seconds,
                 cpus: Collection[int] | None = None, ticks_per_second: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._read_stat = read_stat
        self._own_cpu_seconds = own_cpu_seconds
        self._cpus = _allowed_cpus() if cpus is None else frozenset(cpus)
        self._hz = ticks_per_second or os.sysconf("SC_CLK_TCK")
        self._clock = clock

    def sample(self, now: float | None = None) -> CpuSample | None:
        text = self._read_stat()
        ticks = busy_ticks(text, self._cpus) if text else None
        if ticks is None:
            return None
        wall = self._clock() if now is None else now
        return CpuSample(wall, ticks / self._hz, self._own_cpu_seconds())


def other_cores(before: CpuSample, after: CpuSample) -> float:
    """The cores other processes kept busy between two samples (0 when no time passed)."""
    elapsed = after.wall - before.wall
    if elapsed <= 0:
        return 0.0
    others = (after.busy_seconds - before.busy_seconds) - (after.own_seconds - before.own_seconds)
    return max(0.0, others / elapsed)


def measure_other_load(window: float = START_WINDOW_SECONDS,
                       meter: LoadMeter | None = None) -> float | None:
    """Other processes' load in cores over a short window; None where it cannot be measured."""
    meter = meter or LoadMeter()
    before = meter.sample()
    if before is None:
        return None
    time.sleep(window)
    after = meter.sample()
    return None if after is None else other_cores(before, after)
