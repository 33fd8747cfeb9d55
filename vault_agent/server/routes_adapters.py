"""GET /adapters and the controls that change what the running model serves: activate, rollback, off.

A switch loads the new adapter into the running llama.cpp context between generations (the
backend's generation lock): no restart, no model reload; the KV cache is reset by the backend.
The daemon's `train.active.Adapters` does the work; these routes only expose it.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from ..train.active import plot_path
from . import schema
from .models_adapters import AdapterList
from .runtime import runtime

router = APIRouter(tags=["adapters"])


@router.get("/adapters", response_model=AdapterList)
def list_adapters(request: Request) -> dict:
    """Adapter versions with their training and gate figures (KL to the base among them), their A/B
    win rate once comparisons were judged, and which one is active and served."""
    return runtime(request).adapters.listing()


@router.get("/adapters/{version}/plot", response_class=FileResponse,
            responses={200: {"content": {"image/png": {}}, "description": "The version's training.png."},
                       **schema.NOT_FOUND, **schema.INVALID})
def training_plot(version: str, request: Request) -> FileResponse:
    """The loss and reward margin per training step, as the retrain drew it (PNG)."""
    return FileResponse(plot_path(runtime(request).dirs, version), media_type="image/png")


@router.post("/adapters/{version}/activate",
             responses=schema.responses(schema.NOT_FOUND, schema.INVALID, schema.OTHER_BASE))
def activate(version: str, request: Request) -> dict:
    """Serve this version from the next request on (in-flight answers finish on the old one); 409 for
    a version trained on another base model than the served one."""
    return runtime(request).adapters.activate(version).to_dict()


@router.post("/adapters/rollback")
def rollback(request: Request) -> dict:
    """Go back to the version served before the active one (or to no adapter)."""
    return runtime(request).adapters.rollback().to_dict()


@router.post("/adapters/off")
def off(request: Request) -> dict:
    """Serve the plain base model."""
    return runtime(request).adapters.off().to_dict()
