"""POST/GET /pairs/generate (synthetic pairs with the daemon's model) and GET /train/status."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import Field

from . import schema
from .runtime import Runtime, runtime
from .validation import RequestBody, integer

router = APIRouter(tags=["training"])


class GenerateRequest(RequestBody):
    limit: integer(1, 100000) | None = Field(None, description="Chunks to try (default train.synthetic_chunks).")


@router.post("/pairs/generate", status_code=202, responses=schema.INVALID)
def start_generation(body: GenerateRequest, request: Request) -> dict:
    """Start generating synthetic pairs in the background (one run at a time); poll with GET."""
    s = runtime(request)
    return s.pair_job.start(body.limit or s.settings.train.synthetic_chunks)


@router.get("/pairs/generate")
def generation_progress(request: Request) -> dict:
    """The current or last run: running, total chunks, kept / dropped by rule, errors."""
    return runtime(request).pair_job.snapshot()


@router.get("/train/status")
def train_status(request: Request) -> dict:
    """Nightly retrain: next run (local time), last run and whether one is running; adapter versions."""
    return training_status(runtime(request))


def training_status(s: Runtime) -> dict:
    from ..train import registry

    out = s.scheduler.status()
    out["versions"] = registry.versions(s.dirs)
    return out
