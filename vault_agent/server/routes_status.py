"""GET /status (index coverage, repairs, model, adapter, queue) and POST /index (reconcile now: what
`vault-agent index` asks of a running daemon, which alone may write its index)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from pydantic import Field

from . import schema
from .routes_train import training_status
from .runtime import Runtime, runtime
from .validation import RequestBody

router = APIRouter(tags=["meta"])


class IndexRequest(RequestBody):
    full: bool = Field(False, description="Re-embed every note instead of only what changed.")


def index_status(rt: Runtime) -> dict:
    return {**rt.indexer.status(), "vault_name": rt.indexer.vault.name, "watching": True}  # the daemon always watches


@router.get("/status")
def status(request: Request) -> dict:
    s = runtime(request)
    return {
        "index": index_status(s),
        "model": s.backend.model_id,
        "adapter": s.backend.adapter_version,
        "adapter_served_as": s.backend.adapter_served_as,  # "merged", "runtime" or null
        "adapter_warning": s.adapters.warning,
        "queue": s.queue.snapshot(),
        "training": _training(s),
        "uptime_s": round(time.time() - s.started_at, 1),
    }


def _training(s: Runtime) -> dict | None:
    """Last and next nightly retrain; never fails /status."""
    try:
        return training_status(s)
    except Exception as exc:  # noqa: BLE001
        return {"error": str(exc)}


@router.post("/index", responses=schema.INVALID)
def reindex(body: IndexRequest, request: Request) -> dict:
    """Reconcile the index with the vault now (waits for a sync in progress). Runs in a worker thread
    (a sync route), never on the event loop; the answer comes when the index is up to date."""
    s = runtime(request)
    report = s.indexer.reconcile(force=body.full)
    return {"report": report.to_dict(), "status": index_status(s)}
