"""FastAPI app factory: guards, error mapping, and the routers."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from .. import __version__
from ..errors import UserError
from .auth import OBSIDIAN_ORIGIN, LOOPBACK_NAMES, AuthError, GuardMiddleware, token_dependency
from .gate import Busy, GenerationGate

log = logging.getLogger(__name__)


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
    adapter_warning: str | None = None  # why the saved adapter is not the one served (start-up fallback)
    scheduler: Any = None  # the nightly retrain (train/schedule.py), when the daemon runs one


def _error_status(exc: UserError) -> int:
    from ..feedback.store import NotFound

    if isinstance(exc, AuthError):
        return 401
    from ..train.active import UnknownVersion

    if isinstance(exc, (NotFound, UnknownVersion)):
        return 404
    if isinstance(exc, Busy):
        return 503
    return 400


def create_app(services: Services, token: str) -> FastAPI:
    app = FastAPI(title="vault-agent", version=__version__,
                  description="Local RAG over an Obsidian vault, with a preference log for fine-tuning.")
    app.state.services = services
    settings = services.settings.server

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError):
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Busy) else None
        if isinstance(exc, AuthError):
            headers = {"WWW-Authenticate": "Bearer"}
        return JSONResponse({"error": str(exc)}, status_code=_error_status(exc), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = f"{where}: {first.get('msg', 'invalid request')}" if where else first.get("msg", "invalid request")
        return JSONResponse({"error": message, "detail": jsonable(exc.errors())}, status_code=422)

    @app.exception_handler(ValueError)
    async def bad_value(request: Request, exc: ValueError):
        return JSONResponse({"error": str(exc)}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):  # logged with traceback, answered in one line
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    @app.get("/health", tags=["meta"])
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
        app.include_router(router, dependencies=auth)

    app.add_middleware(
        CORSMiddleware,
        allow_origins=[OBSIDIAN_ORIGIN, *settings.cors_origins],
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
        allow_credentials=False,
    )
    app.add_middleware(GuardMiddleware, allowed_hosts=LOOPBACK_NAMES | services.extra_hosts,
                       max_body_bytes=settings.max_body_bytes)
    return app


def jsonable(errors: list[dict]) -> list[dict]:
    return [{k: (v if isinstance(v, (str, int, float, list, type(None))) else str(v)) for k, v in e.items()}
            for e in errors]
