"""What a running daemon is made of, built once by `Daemon.build()`: every part gets what it depends
on in its constructor, and the routes take the parts they need from here. Nothing is assigned to a
Runtime after it is built."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import Request

if TYPE_CHECKING:  # the parts' modules load torch, llama.cpp, SQLite: only the daemon imports them
    from ..config import Settings
    from ..cpu.share import CpuShare
    from ..feedback.store import PreferenceLog
    from ..index.indexer import Indexer
    from ..llm.base import Backend
    from ..paths import AppDirs
    from ..rag import RagService
    from ..train.active import Adapters
    from ..train.pairs_job import PairJob
    from ..train.schedule import NightlyScheduler
    from ..vault.watcher import DebouncedWatcher
    from .queue import RequestQueue


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    dirs: AppDirs  # the daemon's folders: adapters, training state, the preference log
    indexer: Indexer
    backend: Backend  # the served model (the FakeBackend in tests)
    rag: RagService
    log: PreferenceLog
    queue: RequestQueue
    pair_job: PairJob
    cpu_share: CpuShare
    scheduler: NightlyScheduler
    watcher: DebouncedWatcher
    adapters: Adapters  # the served adapter's switches, listing and start-up warning
    extra_hosts: frozenset[str] = frozenset()  # a non-loopback --host the guard must accept
    started_at: float = field(default_factory=time.time)


def runtime(request: Request) -> Runtime:
    """The daemon's Runtime, for a route."""
    return request.app.state.runtime
