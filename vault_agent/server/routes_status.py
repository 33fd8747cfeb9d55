"""GET /status: index coverage, model, adapter and queue."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request

router = APIRouter(tags=["meta"])


@router.get("/status")
def status(request: Request) -> dict:
    s = request.app.state.services
    index = s.indexer.status()
    backend = s.rag.backend if s.rag else None
    return {
        "index": {
            "vault": index["vault"],
            "vault_name": s.indexer.vault.name,
            "notes_indexed": index["notes_indexed"],
            "notes_total": index["notes_total"],
            "chunks": index["chunks"],
            "last_sync": index["last_sync"],
            "failed": index["failed"],
            "warnings": index["warnings"],
            "embedding_model": index["embedding_model"],
            "watching": s.watcher is not None,
        },
        "model": backend.model_id if backend else None,
        "adapter": backend.adapter_version if backend else None,
        "adapter_warning": s.adapter_warning,
        "queue": s.gate.snapshot(),
        "training": _training(s),
        "uptime_s": round(time.time() - s.started_at, 1),
    }


def _training(s) -> dict | None:
    """Last and next nightly retrain; never fails /status."""
    from .routes_train import training_status

    try:
        return training_status(s)
    except Exception as exc:  # noqa: BLE001
        return {"error": str(exc)}
