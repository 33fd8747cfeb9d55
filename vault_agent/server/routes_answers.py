"""POST /search, /ask and /ask/stream (server-sent events)."""

from __future__ import annotations

import asyncio
import json
import threading

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from ..index.search import search as run_search

router = APIRouter(tags=["answers"])


class SearchRequest(BaseModel):
    query: str = Field(..., min_length=1, max_length=4000)
    k: int = Field(5, ge=1, le=50)


class AskRequest(BaseModel):
    question: str = Field(..., min_length=1, description="The question, in your own words.")
    k: int | None = Field(None, ge=1, le=20, description="Chunks of context (default llm.context_chunks).")


def _services(request: Request):
    return request.app.state.services


def _check_question(services, question: str) -> str:
    limit = services.settings.server.max_question_chars
    if not question.strip():
        raise ValueError("question: must not be blank")
    if len(question) > limit:
        raise ValueError(f"question: longer than {limit} characters (server.max_question_chars)")
    return question.strip()


@router.post("/search")
def search(body: SearchRequest, request: Request) -> dict:
    s = _services(request)
    hits = run_search(s.indexer, body.query, body.k)
    return {"hits": [h.to_dict(s.indexer.vault.name) for h in hits]}


@router.post("/ask")
async def ask(body: AskRequest, request: Request) -> dict:
    s = _services(request)
    question = _check_question(s, body.question)
    s.gate.enter()
    try:
        answer = await run_in_threadpool(s.rag.ask, question, body.k)
    finally:
        s.gate.leave()
    return answer.to_dict()


def sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


@router.post("/ask/stream", response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "`token` events ({text}), then one `final` event (the answer, "
                                             "citations and response_id), or an `error` event."}})
async def ask_stream(body: AskRequest, request: Request) -> StreamingResponse:
    s = _services(request)
    question = _check_question(s, body.question)
    s.gate.enter()  # 503 before the stream starts, not inside it
    cancel = threading.Event()
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()

    def produce() -> None:
        try:
            for kind, value in s.rag.stream(question, cancel, body.k):
                data = {"text": value} if kind == "token" else value.to_dict()
                loop.call_soon_threadsafe(events.put_nowait, (kind, data))
        except Exception as e:  # reported in-stream: the 200 is already sent
            loop.call_soon_threadsafe(events.put_nowait, ("error", {"error": f"{type(e).__name__}: {e}"}))
        finally:
            loop.call_soon_threadsafe(events.put_nowait, None)

    worker = loop.run_in_executor(None, produce)
    worker.add_done_callback(lambda _: s.gate.leave())  # the slot frees when the model does

    async def stream():
        try:
            while (item := await events.get()) is not None:
                yield sse(*item)
        finally:
            cancel.set()  # client gone (or done): stop generating

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
