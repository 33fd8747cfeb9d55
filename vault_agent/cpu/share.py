"""Answers first: the indexer pauses between embedding batches while an answer is generated,
and generation decodes on the cores other work leaves free.

Why: llama.cpp decodes fastest with spinning OpenMP threads, and spinning threads collapse
when another job takes a core (DESIGN.md, benchmarks/serve_bench.py). Our own indexer is the
usual other job; a user waiting for an answer matters more than a note being searchable a
few seconds sooner.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator

from .load import OtherLoad, usable_cores


class CpuShare:
    def __init__(self, *, yield_to_answers: bool = True, follow_load: bool = True, max_pause_s: float = 120.0,
                 load: OtherLoad | None = None, cores: int | None = None) -> None:
        self.yield_to_answers = yield_to_answers
        self.follow_load = follow_load
        self.max_pause_s = max_pause_s  # an endless stream of answers must not stop indexing for good
        self.cores = cores or usable_cores()
        self._cond = threading.Condition()
        self._answering = 0
        self._embedding = 0
        self._embed_threads = 1
        self._last_answer = -math.inf  # monotonic time an answer last began or ended
        self._load = load if load is not None else (OtherLoad() if follow_load else None)
        if self._load is not None:
            self._load.start()
        self.paused_s = 0.0  # total time the indexer waited for answers (read by tests; not yet in /status)
        self._streak_paused = 0.0  # paused during the current unbroken stream of answers

    def close(self) -> None:
        if self._load is not None:
            self._load.stop()

    # --- answers ----------------------------------------------------------------------

    @contextlib.contextmanager
    def answering(self) -> Iterator[None]:
        self.begin_answer()
        try:
            yield
        finally:
            self.end_answer()

    def begin_answer(self) -> None:
        """An answer is wanted: from the moment the request arrives (the request queue calls this),
        so its retrieval and prompt eval run with the indexer paused too, not just its decode."""
        with self._cond:
            self._answering += 1
            self._last_answer = time.monotonic()

    def end_answer(self) -> None:
        with self._cond:
            self._answering = max(0, self._answering - 1)
            self._last_answer = time.monotonic()
            self._cond.notify_all()

    def answers_recent(self, within_s: float = 30.0) -> bool:
        """An answer is running or ended less than `within_s` ago: questions are coming in, so the
        indexer takes small batches (an in-flight batch cannot be interrupted; a small one ends soon)."""
        with self._cond:
            return bool(self._answering) or time.monotonic() - self._last_answer < within_s

    def decode_threads(self, configured: int) -> int:
        """Threads for the next tokens: the configured count, less the cores other work holds
        (other processes, and our own embedder while a batch is in flight)."""
        if not self.follow_load:
            return configured
        other = self._load.cores_busy() if self._load is not None else None
        with self._cond:
            embedding = self._embed_threads if self._embedding else 0
        busy = (other or 0.0) + embedding
        free = self.cores - busy
        return max(1, min(configured, math.floor(free + 0.5)))

    # --- indexing ---------------------------------------------------------------------

    def wait_for_answers(self, should_stop: Callable[[], bool] | None = None) -> None:
        """Block while an answer is being generated: the indexer calls this before each note it
        reads and parses (Python work that holds a core and the GIL beside the spinning decode
        threads) and before each embedding batch. An unbroken stream of answers pauses indexing for
        at most max_pause_s in all; then indexing runs beside them until the stream breaks once."""
        if not self.yield_to_answers:
            return
        with self._cond:
            if not self._answering:
                self._streak_paused = 0.0  # no answer now: the next stream gets a fresh allowance
                return
            t0 = time.monotonic()
            while self._answering and self._streak_paused + (time.monotonic() - t0) < self.max_pause_s:
                if should_stop is not None and should_stop():
                    break
                self._cond.wait(timeout=0.25)
            waited = time.monotonic() - t0
            self._streak_paused += waited
            self.paused_s += waited

    @contextlib.contextmanager
    def embedding(self, threads: int = 1, should_stop: Callable[[], bool] | None = None) -> Iterator[None]:
        """Around one embedding batch: first wait for answers being generated (wait_for_answers),
        then count the batch as in flight."""
        self.wait_for_answers(should_stop)
        with self._cond:
            self._embedding += 1
            self._embed_threads = max(1, threads)
        try:
            yield
        finally:
            with self._cond:
                self._embedding -= 1
