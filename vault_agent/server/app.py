"""FastAPI app factory: guards, error mapping, and the routers."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from .. import __version__
from ..errors import UserError
from .auth import OBSIDIAN_ORIGIN, LOOPBACK_NAMES, AuthError, GuardMiddleware, token_dependency
from . import schema
from .gate import Busy, GenerationGate

log = logging.getLogger(__name__)
STORAGE_RETRY_AFTER_S = 2  # a locked log frees in seconds; a full disk needs the user, and retrying is harmless


@dataclass
class Services:
    """Everything the routes use; the daemon (or a test) builds it."""

    settings: Any
    indexer: Any
    rag: Any
    log: Any
    gate: GenerationGate
    watcher: Any = None
    started_at: float = field(default_factory=time.time)
    extra_hosts: set[str] = field(default_factory=set)
    dirs: Any = None  # the daemon's AppDirs (adapters, training state); None: the environment's
    adapters: Any = None  # train.active.Adapters: the served adapter's switches, listing and start-up warning
    scheduler: Any = None  # the nightly retrain (train/schedule.py), when the daemon runs one


def _error_status(exc: UserError) -> int:
    from ..feedback.store import NotFound, PreferenceLogError

    if isinstance(exc, AuthError):
        return 401
    from ..train.active import UnknownVersion

    if isinstance(exc, (NotFound, UnknownVersion)):
        return 404
    if isinstance(exc, (Busy, PreferenceLogError)):
        return 503  # the client did nothing wrong: retry later (the TUI's outbox does)
    return 400


def _retry_after(exc: UserError) -> str | None:
    from ..feedback.store import PreferenceLogError

    if isinstance(exc, Busy):
        return str(exc.retry_after)
    if isinstance(exc, PreferenceLogError):
        return str(STORAGE_RETRY_AFTER_S)
    return None


def create_app(services: Services, token: str) -> FastAPI:
    # No HTML docs: Swagger UI and ReDoc load their code from a CDN (an offline machine can't, and
    # a page on this origin that runs remote code is a risk), and a browser could not send the
    # token anyway. The schema itself is served below, behind the token.
    app = FastAPI(title="vault-agent", version=__version__, docs_url=None, redoc_url=None, openapi_url=None,
                  description="Local RAG over an Obsidian vault, with a preference log for fine-tuning.",
                  responses=schema.EVERY_ROUTE)
    app.state.services = services
    settings = services.settings.server

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError):
        headers = {}
        if (retry := _retry_after(exc)) is not None:
            headers["Retry-After"] = retry
        if isinstance(exc, AuthError):
            headers["WWW-Authenticate"] = "Bearer"
        return JSONResponse({"error": str(exc)}, status_code=_error_status(exc), headers=headers or None)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return JSONResponse(validation_body(exc.errors()), status_code=422)

    @app.get("/health", tags=["meta"], response_model=Health)
    def health() -> dict:
        """Liveness; the only route without a token."""
        return {"ok": True, "version": __version__}

    from .routes_answers import router as answers
    from .routes_feedback import router as feedback
    from .routes_adapters import router as adapters
    from .routes_status import router as status
    from .routes_train import router as train

    auth = [Depends(token_dependency(token))]
    for router in (status, answers, feedback, adapters, train):
        app.include_router(router, dependencies=auth, responses=schema.AUTH)

    @app.get("/openapi.json", tags=["meta"], include_in_schema=False, dependencies=auth)
    def openapi_document() -> JSONResponse:
        """This API's OpenAPI document (the plugin builds its types from it)."""
        return JSONResponse(schema.drop_default_validation_schema(app.openapi()))

    app.add_middleware(
        CORSMiddleware,
        allow_origins=[OBSIDIAN_ORIGIN, *settings.cors_origins],
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
        allow_credentials=False,
    )
    app.add_middleware(InternalErrorMiddleware)  # innermost of ours: sees what the handlers didn't take
    app.add_middleware(GuardMiddleware, allowed_hosts=LOOPBACK_NAMES | services.extra_hosts,
                       max_body_bytes=settings.max_body_bytes)
    return app


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


def validation_body(errors: Sequence[dict]) -> dict:
    """{"error": one line, "detail": [{loc, msg, type}]} (schema.ValidationErrorBody)."""
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    msg = first.get("msg", "invalid request")
    detail = [{"loc": [p if isinstance(p, int) else str(p) for p in e.get("loc", ())],
               "msg": str(e.get("msg", "")), "type": str(e.get("type", "value_error"))} for e in errors]
    return {"error": f"{where}: {msg}" if where else msg, "detail": detail}


def invalid_field(loc: tuple, msg: str) -> RequestValidationError:
    """A 422 for a check the schema can't express (a limit from the settings)."""
    return RequestValidationError([{"loc": loc, "msg": msg, "type": "value_error"}])
