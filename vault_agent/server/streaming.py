"""A generation streamed to an HTTP client: the blocking model loop runs on a worker thread, its
events reach the event loop through a queue, the queue slot frees when the model does, and a
client that goes away stops the generation. Shared by /ask/stream and /v1/chat/completions."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterable

from ..errors import UserError
from .queue import RequestQueue

log = logging.getLogger(__name__)


class StreamFailure:
    """What a generation raised once the 200 was sent: reported in-stream by the route."""

    def __init__(self, message: str, error_id: str | None = None, exc: BaseException | None = None):
        self.message, self.error_id, self.exc = message, error_id, exc


class ThreadedGeneration:
    """`produce(cancel)` runs on a worker thread as soon as this is built; the caller has already
    entered `queue` (so a full queue is a 503 before the stream starts). Iterate `events()`; call
    `cancel()` when the client is gone or done."""

    def __init__(self, queue: RequestQueue, produce: Callable[[threading.Event], Iterable], where: str):
        self._cancel = threading.Event()
        self._loop = asyncio.get_running_loop()
        self._items: asyncio.Queue = asyncio.Queue()
        self._where = where
        worker = self._loop.run_in_executor(None, self._run, produce)
        worker.add_done_callback(lambda _: queue.leave())  # the slot frees when the model does

    def _put(self, item) -> None:
        self._loop.call_soon_threadsafe(self._items.put_nowait, item)

    def _run(self, produce: Callable[[threading.Event], Iterable]) -> None:
        try:
            for item in produce(self._cancel):
                self._put(item)
        except UserError as e:  # the client's or the model's limit: a message the user can act on
            self._put(StreamFailure(str(e), exc=e))
        except Exception as e:  # a bug: logged with its traceback under an id the client sees
            error_id = uuid.uuid4().hex[:12]
            log.error("internal error %s in %s", error_id, self._where, exc_info=True)
            self._put(StreamFailure(f"internal error {error_id} ({type(e).__name__}); details are in the "
                                    "daemon log", error_id, e))
        finally:
            self._put(None)

    async def events(self) -> AsyncIterator:
        """What `produce` yields, then a StreamFailure if it raised."""
        while (item := await self._items.get()) is not None:
            yield item

    def cancel(self) -> None:
        self._cancel.set()
