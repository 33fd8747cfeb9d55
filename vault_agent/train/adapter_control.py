"""Adapter switches from outside the daemon (the CLI, a retrain's promotion): through the running
daemon when one answers, so its model swaps at once, else `active.Adapters` on the files, used from
the daemon's next start. Both answer the same calls with the same results.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..paths import AppDirs
from .active import Adapters, Switched

if TYPE_CHECKING:
    from ..client import ApiClient


class DaemonAdapters:
    """`Adapters`' calls over the daemon's HTTP API (routes_adapters.py serves them with its own)."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client

    def activate(self, version: str) -> Switched:
        return Switched(**self.client.post(f"/adapters/{version}/activate"))

    def rollback(self) -> Switched:
        return Switched(**self.client.post("/adapters/rollback"))

    def off(self) -> Switched:
        return Switched(**self.client.post("/adapters/off"))

    def listing(self) -> dict:
        return self.client.get("/adapters")


@contextmanager
def open_adapters(dirs: AppDirs) -> Iterator[Adapters | DaemonAdapters]:
    """The running daemon's adapters when one answers, else the files' (no model loaded here)."""
    from ..client import ApiClient

    client = ApiClient.discover(dirs)
    if client is None:
        yield Adapters(dirs)
        return
    with client:
        yield DaemonAdapters(client)
