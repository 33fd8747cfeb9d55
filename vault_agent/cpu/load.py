"""How many cores the rest of the machine is keeping busy, sampled from /proc.

The daemon decodes with libgomp's default wait policy: OpenMP threads spin at the barrier
after every op, ~2.5x the decode speed of sleeping there (OMP_WAIT_POLICY=PASSIVE). The cost:
a spinning team stalls when another job takes one of its cores (2 cores, an embedder beside
it: 95 -> 11-16 tokens/s). Knowing how busy the machine is lets generation drop to the cores
that are free (one thread has no barrier partner to wait for: ~50 tokens/s under the same load).
"""

from __future__ import annotations

import logging
import os
import threading
import time

log = logging.getLogger(__name__)

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _machine_busy_ticks() -> int | None:
    """Busy jiffies of all CPUs since boot (user, nice, system, irq, softirq, steal)."""
    try:
        with open("/proc/stat", "rb") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != b"cpu" or len(fields) < 9:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    return user + nice + system + irq + softirq + steal


def _own_ticks() -> int | None:
    """This process's CPU time (all its threads, spinning ones included) in jiffies."""
    try:
        with open("/proc/self/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    rest = raw[raw.rfind(b")") + 2:].split()  # the command name may contain spaces
    return int(rest[11]) + int(rest[12])  # utime, stime (fields 14 and 15)


def _sample() -> tuple[float, int, int] | None:
    machine, own = _machine_busy_ticks(), _own_ticks()
    if machine is None or own is None:
        return None
    return time.monotonic(), machine, own


class OtherLoad:
    """Cores busy with other processes over the last `interval`, kept fresh by a daemon thread
    (two small /proc reads per interval). None where /proc is missing (not Linux): then
    generation keeps its configured threads."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self._busy: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last = _sample()

    @property
    def available(self) -> bool:
        return self._last is not None

    def start(self) -> OtherLoad:
        if self.available and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="cpu-load", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None

    def cores_busy(self) -> float | None:
        return self._busy

    def update(self) -> float | None:
        now = _sample()
        if now is None or self._last is None:
            return None
        (t0, m0, o0), (t1, m1, o1) = self._last, now
        if t1 - t0 <= 0:
            return self._busy
        self._last = now
        self._busy = max(0.0, ((m1 - m0) - (o1 - o0)) / _TICKS / (t1 - t0))
        return self._busy

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.update()
