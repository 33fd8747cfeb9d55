"""FastAPI app factory: guards, error mapping, and the routers."""

from __future__ import annotations

import json
import logging
import uuid

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from .. import __version__
from ..errors import UserError
from .auth import OBSIDIAN_ORIGIN, LOOPBACK_NAMES, AuthError, BodyLimitMiddleware, HostGuardMiddleware, token_dependency
from . import schema
from .openai_errors import OpenAIErrorShape
from .routes_adapters import router as adapters
from .routes_answers import router as answers
from .routes_feedback import router as feedback
from .routes_models import router as models
from .routes_openai import router as openai_api
from .routes_status import router as status
from .routes_train import router as train
from .idempotency import KeyReservations
from .runtime import Runtime
from .validation import validation_body

log = logging.getLogger(__name__)


def error_headers(exc: UserError) -> dict[str, str] | None:
    """Retry-After for "try again later" errors (each class says how long), WWW-Authenticate for a 401."""
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, AuthError):
        headers["WWW-Authenticate"] = "Bearer"
    return headers or None


def create_app(runtime: Runtime, token: str) -> FastAPI:
    # No HTML docs: Swagger UI and ReDoc load their code from a CDN (an offline machine can't, and
    # a page on this origin that runs remote code is a risk), and a browser could not send the
    # token anyway. The schema itself is served below, behind the token.
    app = FastAPI(title="vault-agent", version=__version__, docs_url=None, redoc_url=None, openapi_url=None,
                  description="Local RAG over an Obsidian vault, with a preference log for fine-tuning.",
                  responses=schema.EVERY_ROUTE)
    app.state.runtime = runtime
    app.state.key_reservations = KeyReservations()
    settings = runtime.settings.server

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError):
        return JSONResponse({"error": str(exc)}, status_code=exc.http_status, headers=error_headers(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return JSONResponse(validation_body(exc.errors()), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def framework_error(request: Request, exc: StarletteHTTPException):
        # The framework's own refusals (unknown path, wrong method, a body that isn't JSON) in
        # the same {"error": ...} shape as ours: clients read `error` and nothing else.
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return JSONResponse({"error": framework_error_line(request, exc)}, status_code=exc.status_code,
                            headers=headers or None)

    @app.get("/health", tags=["meta"], response_model=Health)
    def health() -> dict:
        """Liveness; the only route without a token."""
        return {"ok": True, "version": __version__}

    auth = [Depends(token_dependency(token))]
    for router in (status, answers, feedback, adapters, models, train):
        app.include_router(router, dependencies=auth, responses=schema.AUTH)
    app.include_router(openai_api, dependencies=auth)  # declares its own (OpenAI-shaped) errors

    @app.get("/openapi.json", tags=["meta"], include_in_schema=False, dependencies=auth)
    def openapi_document() -> JSONResponse:
        """This API's OpenAPI document (the plugin builds its types from it)."""
        return JSONResponse(schema.stamp_limits(schema.drop_default_validation_schema(app.openapi()), runtime.settings))

    # Outermost first in the request's path: Host guard, CORS, body limit, internal errors. CORS sits
    # outside every refusal but the Host guard's, so a granted origin can read why it was refused
    # (401, 413, 503, 500 alike).
    app.add_middleware(InternalErrorMiddleware)  # innermost of ours: sees what the handlers didn't take
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=[OBSIDIAN_ORIGIN, *settings.cors_origins],
        allow_methods=["GET", "POST"],
        # whatever request headers a granted origin asks for (the OpenAI JS SDK adds x-stainless-*);
        # a foreign origin's preflight still fails
        allow_headers=["*"],
        allow_credentials=False,
    )
    app.add_middleware(HostGuardMiddleware, allowed_hosts=LOOPBACK_NAMES | runtime.extra_hosts)
    app.add_middleware(OpenAIErrorShape)  # outermost: /v1 errors from every layer in OpenAI's shape
    return app


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves on this path (Starlette's own 405 names only the first
    route's: `OPTIONS /pairs/generate` said POST, though GET is there too). Asked of the routes
    method by method, since included routers nest their routes."""
    return [m for m in ("GET", "POST", "PUT", "PATCH", "DELETE")
            if any(route.matches({**request.scope, "method": m})[0] == Match.FULL
                   for route in request.app.router.routes)]


def framework_error_line(request: Request, exc: StarletteHTTPException) -> str:
    if exc.status_code == 404:
        return f"{schema.NO_SUCH_ENDPOINT}: {request.url.path} (the API is listed in /openapi.json)"
    if exc.status_code == 405:
        return (f"{schema.METHOD_NOT_ALLOWED}: {request.method} on {request.url.path}; "
                f"use {' or '.join(m for m in allowed_methods(request) if m != 'HEAD')}")
    if exc.status_code == 400 and "pars" in str(exc.detail).lower():
        return "the request body is not valid JSON (UTF-8, nested no deeper than the parser allows)"
    return str(exc.detail)


class InternalErrorMiddleware:
    """An unexpected exception is a bug, not the client's fault: its traceback goes to the daemon
    log under an id the client also gets (500). Handled here rather than by an
    exception_handler(Exception), which Starlette re-raises to the server afterwards: uvicorn then
    drops the connection, and the client's next keep-alive request fails."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # noqa: BLE001 - the point: nothing escapes to the server
            error_id = uuid.uuid4().hex[:12]
            log.error("internal error %s on %s %s", error_id, scope.get("method"), scope.get("path"),
                      exc_info=(type(exc), exc, exc.__traceback__))
            if started:  # too late for a status; the client sees the stream end
                return
            body = json.dumps({"error": f"internal error {error_id} ({type(exc).__name__}); details are in "
                                        "the daemon log", "error_id": error_id}).encode()
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})


class Health(BaseModel):
    ok: bool
    version: str
