"""Which DPO variants a run uses (issue 11), decided from the settings and the training pairs
without loading anything: the plan records them, the summary says which ran and why one was
skipped. The loss itself is in losses.py, the trainer that applies it in variant_trainer.py."""

from __future__ import annotations

from typing import Any

from ..errors import UserError

SFT_SKIPPED_NO_CORRECTIONS = "SFT term skipped: no correction pairs among the training pairs"


def variant_plan(train) -> dict[str, Any]:
    """The variant settings (`train`: TrainSettings) as the plan records them. Refuses, before any
    model loads, a variant that does not combine with train.loss_type (they are terms of the
    sigmoid loss)."""
    margins = {s: float(m) for s, m in train.source_margins.items() if m}
    dynamic = train.dynamic_beta
    loss_type = train.loss_type
    if loss_type != "sigmoid" and (dynamic or margins):
        which = "train.dynamic_beta" if dynamic else "train.source_margins"
        raise UserError(f"{which} modifies the sigmoid DPO loss; train.loss_type is {loss_type!r}: set it to "
                        "sigmoid or turn the variant off")
    return {
        "sft_weight": float(train.sft_weight),
        "source_margins": margins,
        "dynamic_beta": {"alpha": train.dynamic_beta_alpha, "momentum": train.dynamic_beta_momentum,
                         "keep": train.dynamic_beta_keep} if dynamic else None,
        "loss_type": loss_type,
    }


def describe(variants: dict[str, Any] | None, pairs) -> dict[str, list[str]]:
    """{"ran": [...], "notes": [...]} for these training pairs: what the summary shows."""
    ran: list[str] = []
    notes: list[str] = []
    if not variants:
        return {"ran": ["dpo"], "notes": notes}
    sources = {p.source for p in pairs}
    if variants["sft_weight"] > 0:
        if "correction" not in sources:
            notes.append(SFT_SKIPPED_NO_CORRECTIONS)
        elif variants.get("loss_type", "sigmoid") != "sigmoid":
            notes.append(f"SFT term skipped: it is added to the sigmoid loss, train.loss_type is "
                         f"{variants['loss_type']!r}")
        else:
            ran.append(f"sft on corrections (weight {variants['sft_weight']:g})")
    if variants["dynamic_beta"]:
        d = variants["dynamic_beta"]
        ran.append(f"dynamic beta (alpha {d['alpha']:g}, momentum {d['momentum']:g}, keep {d['keep']:g})")
    used = {s: m for s, m in variants["source_margins"].items() if s in sources}
    if used:
        ran.append("margins " + ", ".join(f"{s} {m:g}" for s, m in sorted(used.items())))
    elif variants["source_margins"]:
        notes.append("margins skipped: no training pairs from " + ", ".join(sorted(variants["source_margins"])))
    return {"ran": ["dpo", *ran], "notes": notes}
