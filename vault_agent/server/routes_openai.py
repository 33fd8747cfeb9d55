"""The OpenAI-compatible API under /v1: the vault-grounded model for any client that speaks it
(Obsidian chat plugins, editors, the `openai` SDKs).

- GET /v1/models, /v1/models/{id}: `vault-agent` (retrieval + the active adapter: what /ask does)
  and `vault-agent-plain` (the same model and adapter on the client's messages alone).
- POST /v1/chat/completions, streamed (SSE chunks, then [DONE]) or not. Answers go through the
  same path as /ask: RagService, the request queue, the preference log (so /feedback takes the
  `vault_agent.response_id` of the answer), and a client that goes away cancels the generation.
- POST /v1/embeddings with the index's embedding model.
Errors are OpenAI-shaped (openai_errors.py).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable

import numpy as np
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse

from ..errors import UserError
from ..rag import Answer, Prepared, final_answer, messages_tokens
from .models_openai import (MODEL_IDS, VAULT_MODEL, ChatCompletion, ChatCompletionRequest,
                            EmbeddingList, EmbeddingRequest, ModelCard, ModelList)
from .openai_errors import error_body, responses, user_error_response
from .runtime import Runtime, runtime
from .streaming import StreamFailure, ThreadedGeneration

router = APIRouter(prefix="/v1", tags=["openai"])

MAX_STOPS = 4  # as OpenAI


class UnknownModel(UserError):
    http_status = 404
    code = "model_not_found"
    param = "model"


class InvalidParameter(UserError):
    """400 for a value the schema allows but this API can't use."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


def error_response(exc: UserError) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
    return user_error_response(exc, headers)


def model_card(s: Runtime, model_id: str) -> ModelCard:
    return ModelCard(id=model_id, created=int(s.started_at), served_model=s.backend.model_id)


def check_model(model_id: str) -> str:
    if model_id not in MODEL_IDS:
        raise UnknownModel(f"The model {model_id!r} does not exist; this server has {' and '.join(MODEL_IDS)}.")
    return model_id


@router.get("/models", response_model=ModelList, responses=responses())
def list_models(request: Request) -> ModelList:
    s = runtime(request)
    return ModelList(data=[model_card(s, m) for m in MODEL_IDS])


@router.get("/models/{model_id}", response_model=ModelCard, responses=responses(404, 422))
def get_model(model_id: str, request: Request):
    try:
        return model_card(runtime(request), check_model(model_id))
    except UserError as e:
        return error_response(e)


def preparation(s: Runtime, body: ChatCompletionRequest) -> Callable[[], Prepared]:
    """What to answer, checked before the queue is entered; call the result on a worker thread
    (retrieval embeds the question)."""
    check_model(body.model)
    stops = body.stops()
    if len(stops) > MAX_STOPS:
        raise InvalidParameter(f"at most {MAX_STOPS} stop strings", "stop")
    turns = [{"role": "system" if m.role in ("system", "developer") else m.role, "content": m.text()}
             for m in body.messages]
    if body.model == VAULT_MODEL:
        return lambda: s.rag.prepare_chat(turns, max_tokens=body.answer_tokens())
    return lambda: s.rag.prepare_plain(turns, max_tokens=body.answer_tokens())


def generation_args(body: ChatCompletionRequest) -> dict:
    return {"stop": body.stops(), "max_tokens": body.answer_tokens(), "temperature": body.temperature,
            "seed": body.seed}


def extra(answer: Answer) -> dict:
    """The vault_agent field: what a vault-agent client needs to show citations and rate the answer."""
    return {"response_id": answer.response_id, "citations": answer.citations,
            "adapter_version": answer.adapter_version, "index_state": answer.index_state}


def usage(s: Runtime, prep: Prepared, answer: Answer) -> dict:
    prompt = messages_tokens(prep.messages, s.backend.count_tokens)
    return {"prompt_tokens": prompt, "completion_tokens": answer.completion_tokens,
            "total_tokens": prompt + answer.completion_tokens}


@router.post("/chat/completions", response_model=ChatCompletion,
             responses={**responses(404, 422, 503), 200: {
                 "content": {"text/event-stream": {}},
                 "description": "With stream=true: `data: {chat.completion.chunk}` frames (the first with "
                                "delta.role, then delta.content, the last with finish_reason and vault_agent; "
                                "a usage chunk with choices [] if stream_options.include_usage), then "
                                "`data: [DONE]`. An error after the start is a `data: {\"error\": {...}}` frame."}})
async def chat_completions(body: ChatCompletionRequest, request: Request):
    s = runtime(request)
    try:
        prepare = preparation(s, body)
        s.queue.enter()  # 503 before any answer starts
    except UserError as e:
        return error_response(e)
    try:
        prep = await run_in_threadpool(prepare)
    except UserError as e:
        s.queue.leave()
        return error_response(e)
    except BaseException:
        s.queue.leave()
        raise
    completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if body.stream:
        return stream_completion(s, body, prep, completion_id, created)
    try:
        answer = await run_in_threadpool(lambda: final_answer(s.rag.generate(prep, **generation_args(body))))
    except UserError as e:
        return error_response(e)
    finally:
        s.queue.leave()
    return {"id": completion_id, "object": "chat.completion", "created": created, "model": body.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.answer},
                         "finish_reason": answer.finish_reason}],
            "usage": usage(s, prep, answer), "vault_agent": extra(answer)}


def sse_data(data: dict | str) -> bytes:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


def stream_completion(s: Runtime, body: ChatCompletionRequest, prep: Prepared, completion_id: str,
                      created: int) -> StreamingResponse:
    """SSE chunks as OpenAI sends them; the caller has entered the queue (the worker leaves it)."""
    generation = ThreadedGeneration(s.queue, lambda cancel: s.rag.generate(prep, cancel, **generation_args(body)),
                                    "/v1/chat/completions")
    include_usage = body.stream_options is not None and body.stream_options.include_usage

    def chunk(delta: dict, finish_reason: str | None = None, **more) -> bytes:
        frame = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": body.model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}], **more}
        if include_usage:
            frame.setdefault("usage", None)  # as OpenAI: null on every chunk but the usage one
        return sse_data(frame)

    async def stream():
        try:
            yield chunk({"role": "assistant", "content": ""})
            async for item in generation.events():
                if isinstance(item, StreamFailure):  # the 200 is already sent: an error frame, no [DONE]
                    status = item.exc.http_status if isinstance(item.exc, UserError) else 500
                    yield sse_data(error_body(status, item.message, code=getattr(item.exc, "code", None)))
                    return
                kind, value = item
                if kind == "token":
                    yield chunk({"content": value})
                    continue
                yield chunk({}, value.finish_reason, vault_agent=extra(value))
                if include_usage:
                    yield sse_data({"id": completion_id, "object": "chat.completion.chunk", "created": created,
                                    "model": body.model, "choices": [], "usage": usage(s, prep, value)})
            yield sse_data("[DONE]")
        finally:
            generation.cancel()  # client gone (or done): stop generating

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def embed_with_usage(embedder, texts: list[str]) -> tuple[list[list[float]], int]:
    vectors = embedder.embed(texts)
    tokenizer = getattr(embedder.model, "tokenizer", None)
    if tokenizer is None:  # a model without a HF tokenizer: words are the next best count
        return vectors, sum(len(t.split()) for t in texts)
    return vectors, sum(len(ids) for ids in tokenizer(texts, truncation=True)["input_ids"])


@router.post("/embeddings", response_model=EmbeddingList, responses=responses(422))
async def embeddings(body: EmbeddingRequest, request: Request):
    s = runtime(request)
    texts = [body.input] if isinstance(body.input, str) else body.input
    try:  # blank texts and empty lists are refused by the schema (422)
        vectors, tokens = await run_in_threadpool(embed_with_usage, s.indexer.embedder, texts)
    except UserError as e:
        return error_response(e)
    if body.encoding_format == "base64":  # what the openai SDKs ask for by default
        data = [base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode() for v in vectors]
    else:
        data = vectors
    return {"object": "list", "model": s.indexer.embedder.label,
            "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(data)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


