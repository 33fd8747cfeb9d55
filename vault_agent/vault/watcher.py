"""Live sync: watchdog events, debounced, handed to the indexer as a set of changed paths.

Editors save by writing a temp file and renaming it over the note, and a folder rename moves
many notes at once; both arrive as bursts. We collect paths until the vault has been quiet for
`debounce` seconds, then sync them in one go. Anything touching a folder that can hold notes
triggers a reconcile, which is cheap (a stat per note) and catches every case. Events that can
never concern a note (.git/, .obsidian/, ignore globs, non-.md files) are dropped on arrival: they
neither reset the quiet-time clock nor trigger a reconcile, so a busy `git` or a syncing plugin
cannot postpone indexing.

A batch that fails (the index store is full, locked, ...) is kept and retried with exponential
backoff, merged with whatever arrives meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from .files import VaultFiles

log = logging.getLogger(__name__)


class DebouncedWatcher:
    def __init__(
        self,
        files: VaultFiles,
        on_paths: Callable[[set[str]], object],
        on_rescan: Callable[[], object],
        debounce: float = 0.4,
        retry_base: float = 1.0,
        retry_max: float = 60.0,
    ):
        self.files = files
        self.on_paths = on_paths
        self.on_rescan = on_rescan
        self.debounce = debounce
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.failures = 0  # consecutive failed batches; the next retry waits retry_base * 2**(failures-1)
        self._pending: set[str] = set()
        self._rescan = False
        self._last_event = 0.0
        self._failed_at = 0.0
        self._cond = threading.Condition()
        self._stop = False
        self._observer = None
        self.worker = threading.Thread(target=self._run, name="vault-sync", daemon=True)
        self.syncs = 0  # batches handled; tests and status read it

    def start(self) -> "DebouncedWatcher":
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event):  # noqa: D401 - watchdog callback
                if event.event_type in ("opened", "closed_no_write"):
                    return
                watcher._note_event(event)

        self._observer = Observer()
        self._observer.schedule(Handler(), str(self.files.root), recursive=True)
        self._observer.start()
        self.worker.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
        if self.worker.is_alive():
            self.worker.join(timeout=timeout)

    def _note_event(self, event) -> None:
        paths = [event.src_path] + ([event.dest_path] if getattr(event, "dest_path", "") else [])
        rels = [r for r in (self.files.relative(p) for p in paths) if r and r != "."]
        if event.is_directory:
            rescan = event.event_type in ("moved", "deleted", "created") and any(
                not self.files.is_ignored_folder(r) for r in rels)
            notes: list[str] = []
        else:
            rescan = False
            notes = [r for r in rels if not self.files.is_ignored(r)]
        if not (rescan or notes):
            return  # nothing a note could be in: leave the debounce clock alone
        with self._cond:
            self._rescan = self._rescan or rescan
            self._pending.update(notes)
            self._last_event = time.monotonic()
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and not (self._pending or self._rescan):
                    self._cond.wait()
                if self._stop:
                    return
                # wait for the burst to end, and after a failure for the backoff to pass
                while not self._stop and (left := self._wait_left()) > 0:
                    self._cond.wait(left)
                if self._stop:
                    return
                paths, rescan = self._pending, self._rescan
                self._pending, self._rescan = set(), False
            try:
                if rescan:
                    self.on_rescan()
                if paths:
                    self.on_paths(paths)
                self.failures = 0
            except Exception:  # a failed sync must never kill live watching: keep the batch, retry later
                self.failures += 1
                log.exception("sync of %d changed paths failed (attempt %d); retrying in %.1fs",
                              len(paths), self.failures, self._backoff())
                with self._cond:
                    self._pending |= paths
                    self._rescan = self._rescan or rescan
                    self._failed_at = time.monotonic()
            self.syncs += 1

    def _backoff(self) -> float:
        return min(self.retry_max, self.retry_base * 2 ** (self.failures - 1)) if self.failures else 0.0

    def _wait_left(self) -> float:
        now = time.monotonic()
        quiet = self.debounce - (now - self._last_event)
        retry = self._backoff() - (now - self._failed_at) if self.failures else 0.0
        return max(quiet, retry)
