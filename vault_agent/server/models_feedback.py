"""Response bodies of the feedback routes, as the preference log returns them (see feedback/store.py).
They document the 200 answers in /openapi.json; extra fields pass through (extra="allow"), so a
column added to the log is never silently dropped from an answer."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Rating(_Open):
    id: str
    response_id: str
    value: Literal[1, -1]
    comment: str | None
    created: str
    idempotency_key: str | None
    undone: bool


class Correction(_Open):
    id: str
    response_id: str
    text: str
    created: str
    idempotency_key: str | None


class FeedbackResult(_Open):
    response_id: str
    rating: Rating | None = None
    correction: Correction | None = None


class Comparison(_Open):
    id: str
    question: str
    prompt: str
    response_a: str
    response_b: str
    created: str
    choice: Literal["A", "B", "tie"] | None
    chosen_at: str | None
    answer_a: str
    answer_b: str


class Comparisons(_Open):
    comparisons: list[Comparison]


class CompareResult(_Open):
    comparison_id: str
    question: str
    a: dict[str, Any]
    b: dict[str, Any]


class StoredResponse(_Open):
    id: str
    created: str
    question: str
    prompt: str
    messages: list[dict[str, Any]]
    answer: str
    retrieved: list[Any]
    citations: list[Any]
    model_id: str
    adapter_version: str | None
    timings: dict[str, Any]
    source: Literal["ask", "compare", "synthetic"]


class Responses(_Open):
    responses: list[StoredResponse]


class UpDown(_Open):
    up: int
    down: int


class DecidedPending(_Open):
    decided: int
    pending: int


class WinRate(_Open):
    version: str  # 'none': the base model without an adapter
    won: int
    lost: int
    tied: int
    decided: int
    win_rate: float  # (won + tied / 2) / decided, in comparisons against another version


class Stats(_Open):
    responses: int
    ratings: UpDown
    unpaired_thumbs: int
    corrections: int
    comparisons: DecidedPending
    pairs: dict[str, int]
    pairs_total: int
    pairs_untrained: int
    rated_today: int
    adapter_win_rates: list[WinRate] = []
