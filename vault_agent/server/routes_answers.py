"""POST /search, /ask and /ask/stream (server-sent events)."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import Field

from ..index.search import search as run_search
from . import schema
from .runtime import runtime
from .streaming import StreamFailure, ThreadedGeneration
from .validation import RequestBody, check_question, integer, question_field

router = APIRouter(tags=["answers"])


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
    generation = ThreadedGeneration(s.queue, lambda cancel: s.rag.stream(question, cancel, body.k), "/ask/stream")

    async def stream():
        try:
            async for item in generation.events():
                if isinstance(item, StreamFailure):  # reported in-stream: the 200 is already sent
                    failure = {"error": item.message}
                    yield sse("error", failure if item.error_id is None else {**failure, "error_id": item.error_id})
                else:
                    kind, value = item
                    yield sse(kind, {"text": value} if kind == "token" else value.to_dict())
        finally:
            generation.cancel()  # client gone (or done): stop generating

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
