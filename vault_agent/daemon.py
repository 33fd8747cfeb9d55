"""The daemon: index + live watcher + llama.cpp model + preference log + HTTP API, wired together.

Start-up order matters: the index lock is taken first (a second daemon on the same vault stops
there, naming the first), the watcher starts before the reconcile pass, so an edit made while we
catch up is never missed; the HTTP server is up at once and /status shows the catch-up.

Shutdown is the reverse: the reconcile is asked to stop (it checks between embedding batches and
never leaves a half-written batch), the watcher and reconcile threads are joined, and only then
are the log, the model and the index closed, each on its own so one failure skips nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from . import discovery
from .config import Settings
from .errors import UserError
from .paths import AppDirs, private_umask

log = logging.getLogger(__name__)

JOIN_SECONDS = 3.0  # how long shutdown waits for a sync to reach its next batch boundary (~2 s idle CPU)


class Daemon:
    def __init__(self, settings: Settings, vault: Path, dirs: AppDirs, *, allow_remote: bool = False,
                 embedder=None, backend=None):
        from .server.auth import is_loopback

        host = settings.server.host
        if not is_loopback(host) and not allow_remote:
            raise UserError(f"refusing to listen on {host}: other machines could reach your notes; "
                            "pass --allow-remote if you really mean it")
        self.settings = settings
        self.vault = vault
        private_umask()  # the log, index and token are the user's alone
        self.dirs = dirs.ensure()
        self._embedder = embedder
        self._backend = backend
        self.server = None
        self.runtime = None  # built by build(); None again once closed
        self._threads: list[threading.Thread] = []
        self._watcher = None

    def build(self):
        from .cpu.share import CpuShare
        from .feedback.store import PreferenceLog
        from .index.indexer import Indexer
        from .index.lock import IndexBusy
        from .llm.backend import LlamaBackend, configure_openmp
        from .rag import RagService
        from .server.app import create_app
        from .server.auth import is_loopback, load_or_create_token
        from .server.queue import RequestQueue
        from .server.runtime import Runtime
        from .train.active import Adapters
        from .train.pairs_job import PairJob
        from .train.schedule import NightlyScheduler
        from .vault.watcher import DebouncedWatcher

        s = self.settings
        configure_openmp(s.llm)  # before the embedder or the model loads libgomp
        share = CpuShare(yield_to_answers=s.index.yield_to_answers, follow_load=s.llm.threads_follow_load)
        try:
            indexer = Indexer(s, self.vault, self.dirs, embedder=self._embedder, role="serve")
        except IndexBusy as e:
            share.close()
            owner = e.owner or {}
            if owner.get("role") == "serve":
                where = f"at {owner['url']}" if owner.get("url") else "(still starting)"
                raise UserError(f"vault-agent already serves {self.vault}: pid {owner['pid']} {where}; "
                                "use that one or stop it first") from None
            raise
        try:
            backend = self._backend or LlamaBackend(s.llm)
        except BaseException:
            indexer.close()
            share.close()
            raise
        backend.cpu_share = share  # an injected backend (tests) shares the CPU like the daemon's own
        indexer.embedder.cpu_share = share
        pref_log = PreferenceLog(self.dirs.preference_db)
        queue = RequestQueue(s.server.queue_size, cpu_share=share)
        adapters = Adapters(self.dirs, backend, win_rates=pref_log.adapter_win_rates)
        # the saved adapter choice; a missing or broken one falls back to the previous good version
        if adapters.load_saved():
            log.warning("%s", adapters.warning)
        self.runtime = Runtime(
            settings=s, dirs=self.dirs, indexer=indexer, backend=backend,
            rag=RagService(indexer, backend, pref_log, s, version_pair=adapters.comparison_pair),
            log=pref_log, queue=queue, pair_job=PairJob(s, indexer, pref_log, backend, queue), cpu_share=share,
            scheduler=NightlyScheduler(self.dirs, self.vault, s.train),
            watcher=DebouncedWatcher(indexer.files, indexer.sync_paths, indexer.reconcile,
                                     debounce=s.index.debounce_seconds),
            adapters=adapters,
            extra_hosts=frozenset() if is_loopback(s.server.host) else frozenset({s.server.host}))
        self._watcher = self.runtime.watcher
        self.token = load_or_create_token(self.dirs.token_file)
        self.app = create_app(self.runtime, self.token)
        return self

    def _catch_up(self) -> None:
        indexer = self.runtime.indexer
        try:
            report = indexer.reconcile()
            if report.stopped:
                log.info("start-up index stopped for shutdown: %d notes written", report.indexed)
                return
            log.info("index up to date: %d updated, %d removed, %d failed", report.indexed, report.removed, report.failed)
            indexer.embedder.model  # load now, so the first question doesn't pay for it
        except Exception:
            log.exception("start-up reconcile failed; live watching continues")

    def start_background(self) -> None:
        self.runtime.watcher.start()
        self.runtime.scheduler.start()
        t = threading.Thread(target=self._catch_up, name="reconcile", daemon=True)
        t.start()
        self._threads.append(t)

    def serve(self, ready: threading.Event | None = None) -> None:
        """Run the HTTP server in this thread until stopped (Ctrl-C or stop())."""
        import uvicorn

        # h11, not httptools: httptools drops the host of an absolute-form target
        # (`GET http://evil.example/status`), which the Host guard must see to refuse.
        config = uvicorn.Config(self.app, host=self.settings.server.host, port=self.settings.server.port,
                                http="h11", log_level="warning", access_log=False, timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        try:
            self.start_background()
            watcher = threading.Thread(target=self._announce, args=(ready,), daemon=True)
            watcher.start()
            self.server.run()
        finally:
            self.close()

    @property
    def url(self) -> str:
        host = self.settings.server.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def port(self) -> int:
        if self.server and self.server.started and self.server.servers:
            return self.server.servers[0].sockets[0].getsockname()[1]
        return self.settings.server.port

    def _announce(self, ready: threading.Event | None) -> None:
        while self.server is not None and not self.server.started:
            if self.server.should_exit:
                return
            time.sleep(0.02)
        rt = self.runtime
        if rt is not None:
            rt.indexer.owner.set_url(self.url)  # clients of this vault find us through its index
        discovery.write(self.dirs, self.url, self.vault)
        if ready is not None:
            ready.set()

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True

    def close(self) -> None:
        s = self.runtime
        if s is None:
            return
        self.runtime = None
        s.indexer.stop()  # first: the reconcile thread sees it at its next batch
        steps = [
            ("daemon file", lambda: discovery.remove_if_ours(self.dirs)),
            ("watcher", lambda: s.watcher.stop(timeout=JOIN_SECONDS)),
            ("nightly scheduler", s.scheduler.stop),
            ("pair generation", s.pair_job.stop),  # before the log and model close under it
            ("reconcile thread", self._join_threads),
            ("preference log", s.log.close),
            ("cpu load sampler", s.cpu_share.close),
        ]
        if self._backend is None:
            steps.append(("model", s.backend.close))
        steps.append(("index", lambda: s.indexer.close(timeout=0.5 if self.busy_threads() else JOIN_SECONDS)))
        started = time.monotonic()
        for name, step in steps:
            t0 = time.monotonic()
            try:
                step()
            except Exception:  # one failing close must not skip the rest
                log.exception("closing the %s failed", name)
            if time.monotonic() - t0 > 1:
                log.info("closing the %s took %.1fs", name, time.monotonic() - t0)
        log.info("stopped in %.1fs", time.monotonic() - started)

    def busy_threads(self) -> list[str]:
        """Threads of ours still running after close(): one can only be inside an embedding batch
        (native code) that will never write again. The process must then leave with os._exit:
        interpreter teardown under a running torch forward aborts (seen on SIGINT mid-index)."""
        threads = list(self._threads)
        if self._watcher is not None:
            threads.append(self._watcher.worker)
        return [t.name for t in threads if t.is_alive()]

    def _join_threads(self) -> None:
        # The reconcile checks its stop flag between embedding batches (about a second each on an
        # idle CPU). Past the wait, the index's close() makes sure it never writes again.
        for t in self._threads:
            t.join(timeout=JOIN_SECONDS)
            if t.is_alive():
                log.warning("thread %s still busy after %.0f s; it will not write again", t.name, JOIN_SECONDS)
