"""How many threads llama.cpp decodes with: the cores other work leaves free, measured.

llama.cpp's CPU backend splits every matrix product over its threads and waits at a barrier
after each; a thread whose core another process holds stalls all the others. On a 2-core
machine with one core busy elsewhere, 2 threads decode at less than half the speed of 1. So
the default is the physical cores minus the cores other processes keep busy, measured at load
(`choose_threads`) and again about once a second while decoding (`ThreadGovernor`).
`--threads` / `threads` in config.toml, when not 0, wins and is never changed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from localr1.models import hardware
from localr1.models.cpu_load import LoadMeter, measure_other_load, other_cores

# A core counts as taken when other processes keep it at least half busy.
BUSY_SHARE = 0.5
# The governor changes the count only when the load is this far past a boundary, so a load
# near one does not flip the count every second.
HYSTERESIS_CORES = 0.1
RECHECK_SECONDS = 1.0


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    reason: str  # one line, for doctor
    fixed: bool  # set by the user: never adapted


def threads_for(physical: int, other_load: float) -> int:
    """The physical cores other work leaves free (at least 1)."""
    busy = math.floor(max(other_load, 0.0) + (1 - BUSY_SHARE))
    return max(1, physical - busy)


def choose_threads(requested: int, *, physical: int | None = None,
                   other_load: float | None = None, measure: bool = True) -> ThreadChoice:
    """`requested` (--threads / config) when not 0; else the free physical cores.

    `other_load` (cores) skips the measurement; tests and callers that measured pass it."""
    if requested:
        return ThreadChoice(requested, f"as set (--threads or config): {_threads(requested)}",
                            fixed=True)
    physical = physical or hardware.default_threads()
    if other_load is None and measure:
        other_load = measure_other_load()
    if other_load is None:
        return ThreadChoice(physical, f"{_cores(physical)}, other load not measurable here: "
                                      f"{_threads(physical)}", fixed=False)
    threads = threads_for(physical, other_load)
    busy = physical - threads
    state = f"{physical} of {_cores(physical)} free" if busy == 0 else \
        f"{busy} of {_cores(physical)} busy with other work"
    return ThreadChoice(threads, f"{state} ({other_load:.1f} cores of other load): "
                                 f"{_threads(threads)}", fixed=False)


def _threads(n: int) -> str:
    return f"{n} thread{'s' if n != 1 else ''}"


def _cores(n: int) -> str:
    return f"{n} core{'s' if n != 1 else ''}"


class ThreadGovernor:
    """Re-measures other load while decoding and says when the thread count should change.

    The decode loop calls `check(now)` between llama_decode calls (now: time.monotonic(), the
    same clock every call) and applies a returned count with llama_set_n_threads. A call is a
    comparison until RECHECK_SECONDS have passed; then one /proc/stat read."""

    def __init__(self, initial: int, fixed: bool, *, meter: LoadMeter | None = None,
                 physical: int | None = None, interval: float = RECHECK_SECONDS) -> None:
        self.threads = initial
        self._fixed = fixed
        self._meter = meter if meter is not None or fixed else LoadMeter()
        self._physical = physical or (initial if fixed else hardware.default_threads())
        self._interval = interval
        self._next_check = -math.inf
        self._last = None

    def check(self, now: float) -> int | None:
        if now < self._next_check or self._fixed:
            return None
        self._next_check = now + self._interval
        sample = self._meter.sample(now)
        if sample is None:  # nothing to measure on this system: stay as chosen
            self._fixed = True
            return None
        last, self._last = self._last, sample
        if last is None:
            return None
        threads = self._adjusted(other_cores(last, sample))
        if threads == self.threads:
            return None
        self.threads = threads
        return threads

    def _adjusted(self, load: float) -> int:
        fewer = threads_for(self._physical, load - HYSTERESIS_CORES)
        if fewer < self.threads:
            return fewer
        more = threads_for(self._physical, load + HYSTERESIS_CORES)
        return max(more, self.threads)


OMP_WAIT_POLICY = "OMP_WAIT_POLICY"


def wait_policy(openmp: bool, environ: Mapping[str, str] | None = None) -> str:
    """How llama.cpp's idle threads wait, as one line for doctor."""
    if not openmp:
        return "waiting: ggml's own thread pool (no OpenMP)"
    environ = os.environ if environ is None else environ
    value = environ.get(OMP_WAIT_POLICY)
    if value:
        return f"waiting: OpenMP, {OMP_WAIT_POLICY}={value} (set in the environment)"
    return "waiting: OpenMP, spinning briefly then sleeping (its default)"
