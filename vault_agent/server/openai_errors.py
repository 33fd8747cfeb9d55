"""Errors the OpenAI way on /v1 paths: `{"error": {"message", "type", "param", "code"}}`, with the
statuses the rest of the API uses. The routes under /v1 build this body themselves for the errors
they raise; the middleware here reshapes the `{"error": "..."}` bodies that come from elsewhere
(the token check, request validation, the Host and body-size guard, an unknown /v1 path, an
internal error), so an OpenAI client reads every error the same way. Other paths are untouched."""

from __future__ import annotations

import json

from fastapi.responses import JSONResponse

from ..errors import UserError
from . import schema
from .models_openai import OpenAIErrorBody

PREFIX = "/v1/"


def is_openai_path(path: str) -> bool:
    return path.startswith(PREFIX) or path == PREFIX.rstrip("/")


def error_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    return "server_error" if status >= 500 else "invalid_request_error"


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": error_type(status), "param": param, "code": code}}


def user_error_response(exc: UserError, headers: dict[str, str] | None = None) -> JSONResponse:
    """A UserError raised by a /v1 route; `param` and `code` come from the error when it has them."""
    body = error_body(exc.http_status, str(exc), getattr(exc, "param", None), getattr(exc, "code", None))
    return JSONResponse(body, status_code=exc.http_status, headers=headers)


def reshape(status: int, body: object, method: str, path: str) -> dict:
    """The OpenAI body for an error body in this API's own shape (or Starlette's {"detail"})."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body  # already OpenAI-shaped
    framework_miss = isinstance(body, dict) and ("detail" in body or str(body.get("error", "")).startswith(
        (schema.NO_SUCH_ENDPOINT, schema.METHOD_NOT_ALLOWED)))  # no route here, not a route's own 404
    if status in (404, 405) and framework_miss:
        return error_body(status, f"Unknown request URL: {method} {path}. vault-agent serves GET /v1/models, "
                                  "POST /v1/chat/completions and POST /v1/embeddings.", code="unknown_url")
    message = body.get("error") if isinstance(body, dict) else None
    if not isinstance(message, str):
        message = json.dumps(body)[:500]
    param = code = None
    if isinstance(body, dict) and body.get("detail") and isinstance(body["detail"], list):  # a validation error
        first = body["detail"][0]
        param = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
        code = first.get("type")
    elif status == 401:
        code = "invalid_api_key"
    elif status == 413:
        code = "request_too_large"
    return error_body(status, message, param, code)


class OpenAIErrorShape:
    """Pure ASGI, outermost: on /v1 paths, a JSON error response is buffered and reshaped; anything
    else (every success, streams included) passes straight through."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not is_openai_path(scope["path"]):
            return await self.app(scope, receive, send)
        start: dict | None = None
        chunks: list[bytes] = []

        async def reshaping_send(message):
            nonlocal start
            if message["type"] == "http.response.start":
                headers = {k.lower(): v for k, v in message.get("headers", [])}
                if message["status"] >= 400 and headers.get(b"content-type", b"").startswith(b"application/json"):
                    start = message  # hold it until the body is complete
                    return
                return await send(message)
            if start is None or message["type"] != "http.response.body":
                return await send(message)
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            try:
                body = json.loads(b"".join(chunks))
            except ValueError:
                body = {"error": b"".join(chunks).decode("utf-8", "replace")}
            new = json.dumps(reshape(start["status"], body, scope["method"], scope["path"])).encode()
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(new)).encode())]})
            await send({"type": "http.response.body", "body": new})

        await self.app(scope, receive, reshaping_send)


def responses(*statuses: int) -> dict:
    """OpenAPI declarations of the OpenAI-shaped errors a /v1 route answers."""
    described = {
        400: "Bad request: Host not allowed, the prompt doesn't fit the context window "
             "(code context_length_exceeded), or the last message isn't the user's.",
        401: "Missing or wrong bearer token (type authentication_error).",
        404: "No such model (code model_not_found).",
        413: "Request body over server.max_body_bytes.",
        422: "The request does not match this schema (param says where).",
        500: "A bug: the id in the message is in the daemon log.",
        503: "Busy: the model's queue is full; retry after Retry-After seconds.",
    }
    out = {}
    for status in (400, 401, 413, 500, *statuses):
        out[status] = {"model": OpenAIErrorBody, "description": described[status]}
        if status == 503:
            out[status]["headers"] = {"Retry-After": {"description": "Seconds to wait before retrying.",
                                                      "schema": {"type": "integer"}}}
        if status == 401:
            out[status]["headers"] = {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}}
    return out
