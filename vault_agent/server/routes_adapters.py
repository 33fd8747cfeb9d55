"""GET /adapters and the controls that change what the running model serves: activate, rollback, off.

A switch loads the new adapter into the running llama.cpp context between generations (the
backend's generation lock): no restart, no model reload; the KV cache is reset by the backend.
"""

from __future__ import annotations

import threading

from fastapi import APIRouter, Request

from . import schema
from .models_adapters import AdapterList
from .runtime import runtime

router = APIRouter(tags=["adapters"])
_switching = threading.Lock()  # one switch at a time: the backend swap and active.json change together


def switch(services, target) -> dict:
    """Serve `target(state)` (an ActiveState) now and remember it. On a failed load the old adapter
    stays active and nothing is saved."""
    from ..train import active

    dirs = services.dirs
    with _switching:
        state, _ = active.read_state(dirs)
        new = target(state)
        path = active.require_servable(dirs, new.active) if new.active else None
        swap_ms = services.backend.set_adapter(path, new.active)
        active.write_state(dirs, new)
        services.adapter_notice.clear()
    return {"active": new.active, "previous": state.active, "swap_ms": round(swap_ms, 2)}


@router.get("/adapters", response_model=AdapterList)
def list_adapters(request: Request) -> dict:
    """Adapter versions with their training and gate figures (KL to the base among them), their A/B
    win rate once comparisons were judged, and which one is active and served."""
    from ..feedback.store import PreferenceLogError
    from ..train import active

    s = runtime(request)
    try:
        win_rates = s.log.adapter_win_rates()
    except PreferenceLogError:  # a locked log: the versions are still worth listing
        win_rates = None
    out = active.listing(s.dirs, win_rates)
    out["serving"] = s.backend.adapter_version
    out["warning"] = s.adapter_notice.warning or out["warning"]
    return out


@router.post("/adapters/{version}/activate", responses=schema.responses(schema.NOT_FOUND, schema.INVALID))
def activate(version: str, request: Request) -> dict:
    """Serve this version from the next request on (in-flight answers finish on the old one)."""
    from ..train import active

    return switch(runtime(request), lambda state: active.after_activate(state, version))


@router.post("/adapters/rollback")
def rollback(request: Request) -> dict:
    """Go back to the version served before the active one (or to no adapter)."""
    from ..train import active

    s = runtime(request)
    dirs = s.dirs
    return switch(s, lambda state: active.after_rollback(state, dirs))


@router.post("/adapters/off")
def off(request: Request) -> dict:
    """Serve the plain base model."""
    from ..train import active

    return switch(runtime(request), lambda state: active.after_activate(state, None))
