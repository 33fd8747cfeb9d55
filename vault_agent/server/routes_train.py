"""POST/GET /pairs/generate (synthetic pairs with the daemon's model), POST /train/run ("Retrain now")
and GET /train/status (what the plugin's learning view shows)."""

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


class RunRequest(RequestBody):
    force: bool = Field(False, description="Train even when fewer than train.min_new_pairs new pairs wait "
                                           "(the nightly job skips such a run).")


@router.post("/train/run", status_code=202, responses=schema.responses(schema.INVALID, schema.TRAINING_RUNS))
def run_training(request: Request, body: RunRequest | None = None) -> dict:
    """Start the nightly retrain now, in a low-priority child process (serving goes on); 409 while one
    runs. Poll GET /train/status for its stage and, once done, its result."""
    s = runtime(request)
    return {"started": True, "progress": s.scheduler.run_now(force=bool(body and body.force))}


@router.get("/train/status")
def train_status(request: Request) -> dict:
    """Nightly retrain: next run (local time), the run in progress (its stage), the last run and
    its result; the pairs waiting to train, by source; adapter versions."""
    s = runtime(request)
    return {**training_status(s), "waiting": waiting_pairs(s)}


def training_status(s: Runtime) -> dict:
    from ..train import registry

    out = s.scheduler.status()
    out["versions"] = registry.versions(s.dirs)
    return out


def waiting_pairs(s: Runtime) -> dict | None:
    """Pairs no version trained on yet, by source, and how many a nightly run needs; None while the
    preference log cannot be read (locked)."""
    from ..feedback.pairs import PAIR_SOURCES
    from ..feedback.store import PreferenceLogError

    try:
        counts = s.log.untrained_by_source()
    except PreferenceLogError:
        return None
    by_source = {**dict.fromkeys(PAIR_SOURCES, 0), **counts}
    return {"total": sum(by_source.values()), "by_source": by_source, "min_new_pairs": s.settings.train.min_new_pairs}
