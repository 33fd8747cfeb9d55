"""Synthetic pair generation inside the daemon, which owns the model.

One background job at a time. Each generation waits until no user request is running or
queued at the request queue, so a user's question waits for at most the one synthetic
generation already under way.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from . import synthetic
from .keep_rules import KeepRules


class PairJob:
    def __init__(self, settings, indexer, log, backend, queue):
        self.settings, self.indexer, self.log, self.backend, self.queue = settings, indexer, log, backend, queue
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.state: dict[str, Any] = {"running": False, "total": 0, "summary": None, "error": None}

    def start(self, limit: int) -> dict[str, Any]:
        """Start a run (or report the one already running)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return self.snapshot()
            self._stop.clear()
            self.state = {"running": True, "total": 0, "summary": synthetic.Summary().to_dict(), "error": None,
                          "limit": limit, "started": time.time()}
            self._thread = threading.Thread(target=self._run, args=(limit,), name="synthetic-pairs", daemon=True)
            self._thread.start()
            return self.snapshot()

    def snapshot(self) -> dict[str, Any]:
        return dict(self.state)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=120)

    def _generate(self, messages: list[dict], max_tokens: int) -> str:
        queue = self.queue
        while queue.snapshot()["running"] or queue.snapshot()["waiting"]:  # users first
            if self._stop.wait(0.05):
                raise InterruptedError("pair generation stopped")
        llm = self.settings.llm
        return self.backend.chat(messages, max_tokens=max_tokens, temperature=llm.temperature, seed=llm.seed)

    def _run(self, limit: int) -> None:
        s = self.settings
        try:
            summary = synthetic.generate_pairs(
                synthetic.catalog_chunks(self.indexer.catalog), self.log, self._generate,
                synthetic.indexer_retriever(self.indexer, s.llm.context_chunks), limit=limit,
                seed=s.train.seed, context_chunks=s.llm.context_chunks,
                fit=synthetic.context_fitter(self.backend, synthetic.ANSWER_TOKENS),
                progress=self._progress, should_stop=self._stop.is_set,
                rules=KeepRules.from_settings(s.train))
            self.state["summary"] = summary.to_dict()
        except Exception as exc:  # noqa: BLE001 - reported through GET /pairs/generate
            self.state["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            self.state["running"] = False

    def _progress(self, summary: synthetic.Summary, total: int) -> None:
        self.state["summary"] = summary.to_dict()
        self.state["total"] = total
