"""Live sync: watchdog events, debounced, handed to the indexer as a set of changed paths.

Editors save by writing a temp file and renaming it over the note, and a folder rename moves
many notes at once; both arrive as bursts. We collect paths until the vault has been quiet for
`debounce` seconds, then sync them in one go. Anything touching a folder triggers a reconcile,
which is cheap (a stat per note) and catches every case.
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
    ):
        self.files = files
        self.on_paths = on_paths
        self.on_rescan = on_rescan
        self.debounce = debounce
        self._pending: set[str] = set()
        self._rescan = False
        self._last_event = 0.0
        self._cond = threading.Condition()
        self._stop = False
        self._observer = None
        self._worker = threading.Thread(target=self._run, name="vault-sync", daemon=True)
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
        self._worker.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
        if self._worker.is_alive():
            self._worker.join(timeout=30)

    def _note_event(self, event) -> None:
        paths = [event.src_path] + ([event.dest_path] if getattr(event, "dest_path", "") else [])
        with self._cond:
            if event.is_directory and event.event_type in ("moved", "deleted", "created"):
                self._rescan = True
            for p in paths:
                rel = self.files.relative(p)
                if rel and not self.files.is_ignored(rel):
                    self._pending.add(rel)
            self._last_event = time.monotonic()
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and not (self._pending or self._rescan):
                    self._cond.wait()
                if self._stop:
                    return
                # wait for the burst to end
                while not self._stop and (quiet := time.monotonic() - self._last_event) < self.debounce:
                    self._cond.wait(self.debounce - quiet)
                if self._stop:
                    return
                paths, rescan = self._pending, self._rescan
                self._pending, self._rescan = set(), False
            try:
                if rescan:
                    self.on_rescan()
                if paths:
                    self.on_paths(paths)
            except Exception:  # a failed sync must never kill live watching
                log.exception("sync of %d changed paths failed", len(paths))
            self.syncs += 1
