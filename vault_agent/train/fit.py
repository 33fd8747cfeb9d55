"""One training run inside a version's staging directory: the model loaded, the method's rows
fitted to max_length, trained with divergence checks, the adapter saved beside metrics.json,
pairs.json, config.json and a loss plot. What to train on and how is the method's
(strategies.py); where the files go and when they are published is retrain.py's.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from . import memory, registry

if TYPE_CHECKING:
    from ..config import TrainSettings
    from .dpo import TrainingPlan
    from .strategies import TrainingMethod

Progress = Callable[[int, int, dict], None]  # (step, total steps, latest logs)


class TrainingFailed(UserError):
    pass


def fit(plan: TrainingPlan, location: str, method: TrainingMethod, version: str, tmp: Path, runlog: logging.Logger,
        train: TrainSettings, progress: Progress | None, callbacks: list | None, overrides: dict) -> dict[str, Any]:
    """Train `method` into `tmp`; returns the summary's training fields (steps, the method's own,
    prompts_cut, too_long_left_out, train_loss, heldout, memory)."""
    _quiet_libraries()
    import torch

    from ..feedback.pairs import utcnow
    from .dpo import load_model

    torch.manual_seed(train.seed)
    trained_at = utcnow()  # feedback given from now on counts as new for the next --if-due
    history: list[dict] = []
    model, tokenizer = load_model(plan, location)
    lengths = method.fit_to_length(tokenizer, runlog)
    described = method.describe(plan)  # after the rows that cannot fit were left out
    runlog.info("%s %s", method.name.upper(), json.dumps(described))
    before = method.scores(model, tokenizer)
    trainer = method.make_trainer(plan, model, tokenizer, str(tmp / "trainer"),
                                  _trainer_callbacks(progress, history, runlog) + list(callbacks or []), overrides)
    result = _fit_and_save(trainer, tokenizer, tmp)
    after = method.scores(trainer.model, tokenizer)
    heldout = method.heldout_metrics(before, after)
    used = _memory_used(plan)
    runlog.info("done: %d steps, held-out %s, memory %s", result.global_step, json.dumps(heldout), json.dumps(used))
    _write_metrics(tmp, version, result, history, lengths, heldout, trained_at, method=method.name, **described,
                   memory=used)
    registry.write_json(tmp / "pairs.json", method.pairs_record())
    registry.write_json(tmp / "config.json", {"plan": plan.to_dict(), "train": train.model_dump(),
                                              "base_location": location})
    return {"steps": result.global_step, **described, **lengths, "train_loss": result.training_loss,
            "heldout": heldout, "memory": used}


def _trainer_callbacks(progress: Progress | None, history: list[dict], runlog: logging.Logger):
    from transformers import TrainerCallback

    class Watch(TrainerCallback):
        """Keeps every log line, reports progress, and stops on a non-finite loss."""

        def on_log(self, args, state, control, logs=None, **kw):
            logs = dict(logs or {})
            logs["step"] = state.global_step
            history.append(logs)
            runlog.info("step %d/%d %s", state.global_step, state.max_steps, json.dumps(logs, default=str))
            # TRL masks a NaN loss to 0.0, so the log-probs and gradient norm are checked too.
            bad = [k for k in ("loss", "grad_norm", "logps/chosen", "logps/rejected")
                   if isinstance(logs.get(k), (int, float)) and not math.isfinite(float(logs[k]))]
            if bad:
                raise TrainingFailed(f"training diverged ({bad[0]} = {logs[bad[0]]} at step {state.global_step}); "
                                     "no version was written; lower train.learning_rate and retry")
            if progress:
                progress(state.global_step, state.max_steps, logs)

    return [Watch()]


def _quiet_libraries() -> None:
    """Our progress display and summary are the output: the libraries' own progress bars and
    deprecation warnings would scroll them away (they still reach train.log through our callbacks)."""
    import warnings

    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    for module in ("transformers", "trl", "peft", "accelerate"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
        warnings.filterwarnings("ignore", category=UserWarning, module=module)


def _fit_and_save(trainer, tokenizer, tmp: Path):
    """Train, refuse a diverged result, save the adapter; the trainer's scratch directory goes."""
    import shutil

    import torch

    result = trainer.train()
    if not math.isfinite(result.training_loss):
        raise TrainingFailed(f"training diverged (mean loss {result.training_loss}); no version was written")
    if not all(torch.isfinite(p).all() for p in trainer.model.parameters() if p.requires_grad):
        raise TrainingFailed("training diverged (non-finite adapter weights); no version was written; "
                             "lower train.learning_rate and retry")
    trainer.model.save_pretrained(tmp / "adapter")
    tokenizer.save_pretrained(tmp / "adapter")
    shutil.rmtree(tmp / "trainer", ignore_errors=True)
    return result


def _memory_used(plan: TrainingPlan) -> dict[str, Any]:
    """The plan's estimate beside what the run actually used (the test of the estimate reads this)."""
    estimates = [plan.memory.get(k) for k in ("total_gib", "materialise_gib") if plan.memory.get(k)]
    out = {"estimate_gib": max(estimates, default=None), "budget_gib": plan.memory.get("budget_gib"),
           "peak_rss_gib": memory.peak_rss_gib()}
    if plan.device == "cuda":
        import torch

        out["peak_vram_gib"] = round(torch.cuda.max_memory_allocated() / memory.GIB, 2)
    return out


def _write_metrics(tmp: Path, version: str, result, history: list[dict], lengths: dict, heldout: dict,
                   trained_at: str, **extra) -> None:
    losses = [h["loss"] for h in history if "loss" in h]
    metrics = {"version": version, "trained_at": trained_at, **extra, "steps": result.global_step, **lengths,
               "train_loss": result.training_loss,
               "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
               "heldout": heldout, "history": history}
    plot_note = plot_training(history, tmp / "training.png")
    if plot_note:
        metrics["plot"] = plot_note
    registry.write_json(tmp / "metrics.json", metrics)


def plot_training(history: list[dict], path: Path) -> str | None:
    """loss and reward margin per step as PNG; None (and a note) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no plot (pip install matplotlib)"
    rows = [h for h in history if "loss" in h]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([h["step"] for h in rows], [h["loss"] for h in rows], label="loss")
    margins = [h for h in rows if "rewards/margins" in h]
    if margins:
        ax.plot([h["step"] for h in margins], [h["rewards/margins"] for h in margins], label="reward margin")
    ax.set_xlabel("step")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return None
