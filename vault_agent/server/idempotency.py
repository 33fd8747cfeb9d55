"""Idempotency keys reserved before any work: while one request with a key runs, others with the
same key wait for it, then find its stored result (or a conflict) instead of doing the work again.
In-process is enough: one daemon serves a preference log."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class KeyReservations:
    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._holders: dict[tuple[str, str], int] = {}

    @contextlib.asynccontextmanager
    async def reserve(self, action: str, key: str | None) -> AsyncIterator[None]:
        """Hold (action, key) for the block; no key, no reservation."""
        if key is None:
            yield
            return
        slot = (action, key)
        lock = self._locks.setdefault(slot, asyncio.Lock())
        self._holders[slot] = self._holders.get(slot, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._holders[slot] -= 1
            if not self._holders[slot]:  # the last one out forgets the key: the log remembers it
                del self._holders[slot], self._locks[slot]
