"""Adapter versions as a finished retrain leaves them (metrics.json, gate.json, pairs.json, the GGUF
the FakeBackend loads, training.png drawn by the retrain's own plot function): for the learning view's
tests, where running a real training adds minutes and nothing to check."""

from __future__ import annotations

import json

from vault_agent.paths import AppDirs
from vault_agent.train import registry
from vault_agent.train.fit import plot_training


def write_version(dirs: AppDirs, version: str, *, accuracy: float, margin: float, kl: float,
                  promote: bool = True, pairs: int = 12) -> None:
    vdir = registry.adapters_dir(dirs) / version
    vdir.mkdir(parents=True)
    history = [{"step": s, "loss": 0.7 - 0.04 * s, "rewards/margins": 0.1 * s} for s in range(1, 9)]
    (vdir / "metrics.json").write_text(json.dumps({
        "version": version, "method": "dpo", "steps": 8, "history": history,
        "heldout": {"pairs": 4, "accuracy_before": 0.5, "accuracy_after": accuracy,
                    "margin_before": 0.0, "margin_after": margin}}))
    (vdir / "gate.json").write_text(json.dumps({
        "promote": promote, "reasons": [] if promote else ["held-out accuracy fell"],
        "candidate": {"accuracy": accuracy, "margin": margin, "perplexity": 12.5, "kl_to_base": kl}}))
    (vdir / "pairs.json").write_text(json.dumps({"train": [f"p{i}" for i in range(pairs)], "heldout": []}))
    (vdir / "adapter.gguf").write_bytes(b"GGUF fake adapter for the FakeBackend")
    assert plot_training(history, vdir / "training.png") is None, "matplotlib is a dependency: the plot is drawn"
