"""GET /models (the GGUF models on this machine, and which one is served) and POST /models/use (switch
the served model between requests: in-flight answers finish on the old one; an adapter trained on
another base is switched off, never applied)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from . import schema
from .models_models import ModelListing, ModelUsed, UseModel
from .runtime import runtime

router = APIRouter(tags=["models"])

BAD_MODEL = {404: {"model": schema.ErrorBody, "description": "No model of that name and no such file."},
             422: {"model": schema.ValidationErrorBody,
                   "description": "Not servable (truncated, not GGUF, not a chat model, a vision projector), "
                                  "or the body does not match the schema."}}


@router.get("/models", response_model=ModelListing)
def list_models(request: Request) -> dict:
    """Every GGUF model found (Ollama, LM Studio, the Hugging Face cache, llm.model_dirs, the bundled one)."""
    from ..models.catalog import list_models as catalog

    s = runtime(request)
    rows = catalog(s.settings, served=s.backend.model_path)
    return {"served": s.backend.model_id, "models": [r.to_dict() for r in rows]}


@router.post("/models/use", response_model=ModelUsed, responses=BAD_MODEL)
async def use_model(body: UseModel, request: Request) -> dict:
    """Serve this model from the next request on, and save it as llm.model_path for the next start."""
    from ..models.switch import use_in_daemon

    s = runtime(request)
    return await run_in_threadpool(use_in_daemon, body.model, s.settings, s.adapters)
