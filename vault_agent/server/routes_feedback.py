"""Feedback on answers: thumbs, corrections, A-vs-B comparisons, and the queue for raters.

Every write takes an idempotency key (body field or `Idempotency-Key` header): the first call
with a key is recorded, a retry gets the first call's result back and changes nothing, and the
same key with a different request gets 409. /compare reserves its key before generating, so
parallel retries run one generation. SQLite
runs in worker threads (plain `def` routes, or run_in_threadpool), never on the event loop.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import ConfigDict, Field, field_validator, model_validator

from . import schema
from ..feedback.db import fingerprint
from .models_feedback import CompareResult, Comparison, Comparisons, FeedbackResult, Rating, Responses, Stats
from .runtime import runtime
from .validation import NOT_BLANK, RequestBody, check_question, integer, json_integer, question_field

router = APIRouter(tags=["feedback"])
KeyHeader = Header(None, alias="Idempotency-Key", max_length=200,
                   description="Retries with the same key are recorded once (same as the body field).")
Key = Field(None, min_length=1, max_length=200, description="Retries with the same key are recorded once.")

WRITE = schema.responses(schema.INVALID, schema.KEY_REUSED, schema.UNAVAILABLE)
READ = schema.responses(schema.INVALID, schema.UNAVAILABLE)


class FeedbackRequest(RequestBody):
    # The rule "a rating, a correction, or both" is in the schema too (anyOf), so clients built
    # from it can't send a body the server refuses.
    model_config = ConfigDict(strict=True, json_schema_extra={"anyOf": [
        {"required": ["rating"], "properties": {"rating": {"enum": [1, -1]}}},
        {"required": ["correction"], "properties": {"correction": {"type": "string"}}},
    ]})

    response_id: str = Field(..., min_length=1, max_length=100)
    rating: Literal[1, -1] | None = Field(None, description="+1 thumbs up, -1 thumbs down.")
    comment: str | None = Field(None, max_length=4000)
    correction: str | None = Field(None, min_length=1, max_length=20000, pattern=NOT_BLANK,
                                   description="Your better answer.")
    idempotency_key: str | None = Key

    @field_validator("rating", mode="before")
    @classmethod
    def not_a_boolean(cls, value):
        if isinstance(value, bool):  # True == 1 to Python: strict mode lets it through a Literal
            raise ValueError("must be 1 or -1, not true/false")
        return json_integer(value)

    @model_validator(mode="after")
    def something_to_record(self):
        if self.rating is None and self.correction is None:
            raise ValueError("give a rating (+1/-1), a correction, or both")
        return self


class CompareRequest(RequestBody):
    question: str = question_field("The question both answers are to.")
    k: integer(1, 20) | None = None
    idempotency_key: str | None = Key


class ChoiceRequest(RequestBody):
    choice: Literal["A", "B", "tie"]
    idempotency_key: str | None = Key


def _log(request: Request):
    return runtime(request).log


@router.post("/feedback", response_model=FeedbackResult,
             responses=schema.responses(WRITE, schema.NOT_FOUND))
def feedback(body: FeedbackRequest, request: Request, idempotency_key: str | None = KeyHeader) -> dict:
    log = _log(request)
    key = body.idempotency_key or idempotency_key
    if log.get_response(body.response_id) is None:
        from ..feedback.store import NotFound

        raise NotFound(f"no response with id {body.response_id!r}")
    out: dict = {"response_id": body.response_id}
    if body.rating is not None:
        out["rating"] = log.rate(body.response_id, body.rating, body.comment, idempotency_key=key and f"{key}:rate")
    if body.correction is not None:
        out["correction"] = log.correct(body.response_id, body.correction,
                                        idempotency_key=key and f"{key}:correct")
    return out


@router.post("/ratings/{rating_id}/undo", response_model=Rating, responses=schema.responses(WRITE, schema.NOT_FOUND))
def undo_rating(rating_id: str, request: Request, idempotency_key: str | None = KeyHeader) -> dict:
    return _log(request).undo_rating(rating_id, idempotency_key=idempotency_key)


@router.post("/compare", response_model=CompareResult, responses=WRITE)
async def compare(body: CompareRequest, request: Request, idempotency_key: str | None = KeyHeader) -> dict:
    """Two candidate answers to one question, to choose between."""
    s = runtime(request)
    question = check_question(s.settings, body.question)
    key = body.idempotency_key or idempotency_key
    asked = fingerprint(question, body.k)
    async with request.app.state.key_reservations.reserve("compare", key):  # parallel retries wait here
        if key and (prior := await run_in_threadpool(s.log.keyed_result, "compare", key, asked)) is not None:
            return prior  # a retry: no second generation, no second comparison
        return await new_comparison(s, question, body.k, key, asked)


async def new_comparison(s, question: str, k: int | None, key: str | None, asked: str) -> dict:
    s.queue.enter()
    try:
        a, b = await run_in_threadpool(s.rag.compare, question, k)
    finally:
        s.queue.leave()

    def save() -> dict:  # SQLite waits for fsync: a worker thread's job, not the event loop's
        prompt = s.log.get_response(a.response_id)["prompt"]
        return s.log.create_comparison(
            question, prompt, a.response_id, b.response_id, idempotency_key=key, request=asked,
            reply=lambda made: {"comparison_id": made["id"], "question": question, "a": a.to_dict(),
                                "b": b.to_dict()})

    return await run_in_threadpool(save)


@router.post("/compare/{comparison_id}/choice", response_model=Comparison,
             responses=schema.responses(WRITE, schema.NOT_FOUND))
def choose(comparison_id: str, body: ChoiceRequest, request: Request,
           idempotency_key: str | None = KeyHeader) -> dict:
    return _log(request).choose(comparison_id, body.choice, idempotency_key=body.idempotency_key or idempotency_key)


@router.get("/compare/pending", response_model=Comparisons, responses=READ)
def pending_comparisons(request: Request, limit: int = Query(20, ge=1, le=200)) -> dict:
    return {"comparisons": _log(request).pending_comparisons(limit)}


@router.get("/preferences/stats", response_model=Stats, responses=schema.UNAVAILABLE)
def preference_stats(request: Request) -> dict:
    return _log(request).stats()


@router.get("/responses", response_model=Responses, responses=READ)
def responses(request: Request, unrated: bool = False, limit: int = Query(50, ge=1, le=500)) -> dict:
    return {"responses": _log(request).recent_responses(limit, unrated=unrated)}
