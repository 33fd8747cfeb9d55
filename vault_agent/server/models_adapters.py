"""Response body of GET /adapters, as train/active.py's listing returns it. It documents the 200
answer in /openapi.json; extra fields pass through (extra="allow"), like the feedback models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from .models_feedback import WinRate


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class GateFigures(_Open):
    promote: bool | None  # the gate's verdict; None in a gate.json written before verdicts had it
    reasons: list[str] | None
    accuracy: float | None  # held-out preference accuracy (llama.cpp, mean token log-prob)
    margin: float | None  # mean (chosen - rejected) token log-prob, nats
    perplexity: float | None  # on held-out vault chunks
    kl_to_base: float | None = None  # mean per-token KL(adapter || base) on held-out answers, nats
    evidence: dict[str, Any] | None = None  # the evidence test: pairs, accuracies, margin gain's 95% interval


class AdapterVersion(_Open):
    version: str
    created: str | None
    pairs: int | None  # pairs trained on
    heldout: dict[str, Any] | None  # training's before/after figures on the held-out pairs
    gate: GateFigures | None  # None: not gated (promotion off, or the export failed)
    ab: WinRate | None = None  # its record in decided A/B comparisons; None until one was judged
    servable: bool  # has a GGUF LoRA llama.cpp can load
    active: bool
    base: dict[str, Any] | None = None  # the model it was trained on: file, fingerprint, architecture
    fits_served_model: bool | None = None  # trained on the served model (None: no model file to compare)


class AdapterList(_Open):
    active: str | None
    history: list[str]
    versions: list[AdapterVersion]
    base_ab: WinRate | None = None  # the plain base's record against adapters in A/B comparisons
    serving: str | None = None  # what the running model serves now
    warning: str | None
