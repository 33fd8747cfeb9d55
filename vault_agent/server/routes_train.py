"""POST/GET /pairs/generate (synthetic pairs with the daemon's model) and GET /train/status."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from . import schema

router = APIRouter(tags=["training"])


class GenerateRequest(BaseModel):
    limit: int | None = Field(None, ge=1, le=100000, description="Chunks to try (default train.synthetic_chunks).")


def _job(request: Request):
    s = request.app.state.services
    job = getattr(request.app.state, "pair_job", None)
    if job is None:
        from ..train.pairs_job import PairJob

        job = request.app.state.pair_job = PairJob(s)
    return s, job


@router.post("/pairs/generate", status_code=202, responses=schema.INVALID)
def start_generation(body: GenerateRequest, request: Request) -> dict:
    """Start generating synthetic pairs in the background (one run at a time); poll with GET."""
    s, job = _job(request)
    return job.start(body.limit or s.settings.train.synthetic_chunks)


@router.get("/pairs/generate")
def generation_progress(request: Request) -> dict:
    """The current or last run: running, total chunks, kept / dropped by rule, errors."""
    return _job(request)[1].snapshot()


@router.get("/train/status")
def train_status(request: Request) -> dict:
    """Nightly retrain: next run (local time), last run and whether one is running; adapter versions."""
    return training_status(request.app.state.services)


def training_status(s) -> dict:
    from ..paths import app_dirs
    from ..train import registry
    from ..train.schedule import NightlyScheduler

    dirs = s.dirs or app_dirs()
    sched = getattr(s, "scheduler", None) or NightlyScheduler(dirs, None, s.settings.train)
    out = sched.status()
    out["versions"] = registry.versions(sched.dirs)
    return out
