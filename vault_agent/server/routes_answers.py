"""POST /search, /ask and /ask/stream (server-sent events)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import Field

from ..errors import UserError
from ..index.search import search as run_search
from . import schema
from .runtime import runtime
from .validation import RequestBody, check_question, integer, question_field

router = APIRouter(tags=["answers"])
log = logging.getLogger(__name__)


class SearchRequest(RequestBody):
    query: str = question_field("What to look for; longer than server.max_question_chars gets 422.")
    k: integer(1, 50) | None = Field(None, description="Hits to return (default search.top_k).")


class AskRequest(RequestBody):
    question: str = question_field("The question, in your own words.")
    k: integer(1, 20) | None = Field(None, description="Chunks of context (default llm.context_chunks).")


@router.post("/search", responses=schema.responses(schema.INVALID))
def search(body: SearchRequest, request: Request) -> dict:
    s = runtime(request)
    query = check_question(s.settings, body.query, "query")
    hits = run_search(s.indexer, query, body.k or s.settings.search.top_k)
    return {"hits": [h.to_dict(s.indexer.vault.name) for h in hits]}


@router.post("/ask", responses=schema.responses(schema.INVALID, schema.UNAVAILABLE))
async def ask(body: AskRequest, request: Request) -> dict:
    s = runtime(request)
    question = check_question(s.settings, body.question)
    s.queue.enter()
    try:
        answer = await run_in_threadpool(s.rag.ask, question, body.k)
    finally:
        s.queue.leave()
    return answer.to_dict()


def sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


@router.post("/ask/stream", response_class=StreamingResponse,
             responses={**schema.INVALID, **schema.UNAVAILABLE, 200: {"content": {"text/event-stream": {}},
                              "description": "`token` events ({text}), then one `final` event (the answer, "
                                             "citations and response_id), or an `error` event."}})
async def ask_stream(body: AskRequest, request: Request) -> StreamingResponse:
    s = runtime(request)
    question = check_question(s.settings, body.question)
    s.queue.enter()  # 503 before the stream starts, not inside it
    cancel = threading.Event()
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()

    def produce() -> None:
        try:
            for kind, value in s.rag.stream(question, cancel, body.k):
                data = {"text": value} if kind == "token" else value.to_dict()
                loop.call_soon_threadsafe(events.put_nowait, (kind, data))
        except UserError as e:  # reported in-stream: the 200 is already sent
            loop.call_soon_threadsafe(events.put_nowait, ("error", {"error": str(e)}))
        except Exception as e:  # a bug: logged with its traceback under an id the client sees
            error_id = uuid.uuid4().hex[:12]
            log.error("internal error %s in /ask/stream", error_id, exc_info=True)
            loop.call_soon_threadsafe(events.put_nowait, ("error", {
                "error": f"internal error {error_id} ({type(e).__name__}); details are in the daemon log",
                "error_id": error_id}))
        finally:
            loop.call_soon_threadsafe(events.put_nowait, None)

    worker = loop.run_in_executor(None, produce)
    worker.add_done_callback(lambda _: s.queue.leave())  # the slot frees when the model does

    async def stream():
        try:
            while (item := await events.get()) is not None:
                yield sse(*item)
        finally:
            cancel.set()  # client gone (or done): stop generating

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
