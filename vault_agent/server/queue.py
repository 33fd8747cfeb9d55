"""The request queue: one generation at a time per model context, a bounded queue behind it, 503
past that."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from ..errors import UserError

if TYPE_CHECKING:
    from ..cpu.share import CpuShare


class Busy(UserError):
    """503: the queue is full; retry after `retry_after` seconds."""

    http_status = 503  # the client did nothing wrong: retry later (the TUI's outbox does)

    def __init__(self, message: str, retry_after: int = 5):
        super().__init__(message)
        self.retry_after = retry_after


class RequestQueue:
    def __init__(self, queue_size: int, cpu_share: CpuShare | None = None):
        self.capacity = queue_size + 1  # the running generation plus those waiting
        self._lock = threading.Lock()
        self.inside = 0
        # every request inside counts as an answer being made, from its arrival: the indexer
        # pauses before the question's retrieval, not only once its tokens decode (cpu/share.py)
        self.cpu_share = cpu_share

    def enter(self) -> None:
        with self._lock:
            if self.inside >= self.capacity:
                raise Busy(f"model busy: {self.inside - 1} requests already waiting; retry shortly")
            self.inside += 1
        if self.cpu_share is not None:
            self.cpu_share.begin_answer()

    def leave(self) -> None:
        with self._lock:
            was_inside = self.inside > 0
            self.inside = max(0, self.inside - 1)
        if was_inside and self.cpu_share is not None:
            self.cpu_share.end_answer()

    def snapshot(self) -> dict:
        with self._lock:
            return {"running": min(self.inside, 1), "waiting": max(0, self.inside - 1), "capacity": self.capacity}
