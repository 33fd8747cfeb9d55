"""The error bodies the server really sends, and the OpenAPI document that says so.

Every error is JSON with an `error` line; validation errors add `detail` (where and why), and
internal errors add `error_id` (the same id is in the daemon log, with the traceback). Which
statuses a route can answer is declared here once and stamped onto the generated schema, so the
document the plugin builds its types from matches what the guards and handlers send.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    error: str = Field(..., description="One line: what went wrong and what to do.")


class ValidationIssue(BaseModel):
    loc: list[str | int] = Field(..., description="Where: body/query/path, then field names.")
    msg: str
    type: str


class ValidationErrorBody(ErrorBody):
    detail: list[ValidationIssue]


class InternalErrorBody(ErrorBody):
    error_id: str = Field(..., description="Also in the daemon log, next to the traceback.")


def _json(model: type[BaseModel], description: str, headers: dict | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"model": model, "description": description}
    if headers:
        out["headers"] = headers
    return out


_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}

HOST = {400: _json(ErrorBody, "Host header not allowed (DNS-rebinding guard), or a body that is not JSON.")}
METHOD = {405: _json(ErrorBody, "Method not allowed on this path; the Allow header lists those that are.",
                     {"Allow": {"description": "The methods this path serves.", "schema": {"type": "string"}}})}
AUTH = {401: _json(ErrorBody, "Missing or wrong bearer token.",
                   {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}})}
NOT_FOUND = {404: _json(ErrorBody, "No such response, rating or comparison.")}
TOO_LARGE = {413: _json(ErrorBody, "Request body over server.max_body_bytes.")}
INVALID = {422: _json(ValidationErrorBody, "The request does not match this schema (or a server limit).")}
OTHER_BASE = {409: _json(ErrorBody, "The adapter was trained on another base model than the one served.")}
TRAINING_RUNS = {409: _json(ErrorBody, "A retrain is already running; poll GET /train/status.")}
UNAVAILABLE = {503: _json(ErrorBody, "Busy (the model's queue is full) or the preference log is locked or "
                                     "full; retry after Retry-After seconds.", _RETRY_AFTER)}
INTERNAL = {500: _json(InternalErrorBody, "A bug: the error_id is in the daemon log.")}

NO_ROUTE = {404: _json(ErrorBody, "No such endpoint (or no such response, rating or comparison).")}
KEY_REUSED = {409: _json(ErrorBody, "This Idempotency-Key was used before with a different request; use a new key.")}

# the framework's own refusals start with these (openai_errors tells them from a route's own 404)
NO_SUCH_ENDPOINT = "no such endpoint"
METHOD_NOT_ALLOWED = "method not allowed"

EVERY_ROUTE = {**HOST, **NO_ROUTE, **METHOD, **TOO_LARGE, **INTERNAL}


def responses(*groups: dict) -> dict:
    out: dict = {}
    for g in groups:
        out.update(g)
    return out


def stamp_limits(doc: dict, settings) -> dict:
    """Limits that come from the settings (fields marked "x-limit": "server.max_question_chars")
    become maxLength, so the document states what this daemon enforces."""
    limits = {"server.max_question_chars": settings.server.max_question_chars}
    for component in doc.get("components", {}).get("schemas", {}).values():
        for prop in component.get("properties", {}).values():
            if (name := prop.pop("x-limit", None)) in limits:
                prop["maxLength"] = limits[name]
    return doc


def drop_default_validation_schema(schema: dict) -> dict:
    """FastAPI adds its own HTTPValidationError component; we answer ValidationErrorBody instead
    (every route with input declares its 422), so the unused default goes."""
    comps = schema.get("components", {}).get("schemas", {})
    text = repr(schema.get("paths"))
    for name in ("HTTPValidationError", "ValidationError"):
        if name in comps and f"#/components/schemas/{name}'" not in text:
            del comps[name]
    return schema
