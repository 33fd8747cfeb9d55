"""`vault-agent retrain`: log -> dataset -> method (DPO on pairs, KTO on single answers) -> plan -> LoRA -> a new
adapter version.

Order matters for the "no half state" rule: everything is written into the version's temp
directory, the directory is renamed into place, and only then are the pairs marked trained.
A crash between the rename and the marking leaves a complete version whose pairs still look
new; the next run trains them again, which is harmless.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import gc
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..paths import AppDirs
from . import dataset as ds
from . import memory, registry
from .schedule import TrainingLock
from .variants import describe as describe_variants

log = logging.getLogger(__name__)
Progress = Callable[[int, int, dict], None]  # (step, total steps, latest logs)


class TrainingFailed(UserError):
    pass


class OutOfMemory(TrainingFailed):
    pass


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


def plan_for(settings, dirs: AppDirs, device: str | None = None):
    """The plan with the base resolved, fitted to the memory budget (nothing is loaded; DoesNotFit
    in one line when even the leanest plan needs more than the budget)."""
    from .base import resolve_base
    from .dpo import ModelDims, detect_device, dims_from_gguf, make_plan

    device = device or detect_device()
    base = resolve_base(settings.train, settings.llm, dirs)
    dims = None
    try:
        if base.ready:
            from transformers import AutoConfig

            dims = ModelDims.from_config(AutoConfig.from_pretrained(base.location))
        elif base.gguf is not None:
            dims = dims_from_gguf(base.gguf)
    except Exception as exc:  # noqa: BLE001 - without dims the plan takes the leanest layout
        log.warning("no memory estimate: %s", exc)
    budget = memory.budget(settings.train.max_memory_gb, device)
    plan = make_plan(settings.train, device=device,
                     base={"source": base.source, "location": base.location,
                           "gguf": str(base.gguf) if base.gguf else None}, dims=dims, budget=budget)
    if dims is not None and not base.ready:  # this run materialises the GGUF first: its own peak
        plan.memory["materialise_gib"] = memory.check_materialise(dims, budget)
    return plan, base


def _plot(history: list[dict], path: Path) -> str | None:
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


def load_training_set(settings, dirs: AppDirs) -> ds.TrainingSet:
    pairs, skipped = ds.read_pairs(dirs.preference_db)
    return ds.build(pairs, settings.train, skipped)


def retrain(settings, dirs: AppDirs, *, if_due: bool = False, dry_run: bool = False, device: str | None = None,
            progress: Progress | None = None, callbacks: list | None = None,
            trainer_overrides: dict | None = None, method: str | None = None,
            on_stage: Callable[[str], None] | None = None, limit_memory: bool = False) -> dict[str, Any]:
    """Train one version. Returns the summary (`--json`). Raises UserError subclasses for what a
    user can fix (too few pairs, another run holding the lock, divergence, a bad --method, a plan
    that does not fit the memory budget). `on_stage` hears each stage as it starts (plan,
    materialise, train, export, gate, activate); `limit_memory` holds this process to the plan's
    budget (the nightly run), so a run that outgrows it fails alone."""
    from . import examples as ex
    from . import method as how

    stage = on_stage or (lambda name: None)
    settings = how.with_method(settings, method)
    dirs.ensure()
    # A dry run reads and plans only, so it needs no lock and may run beside a training.
    with contextlib.nullcontext() if dry_run else TrainingLock(dirs):
        started = time.perf_counter()
        if not dry_run:
            registry.remove_leftovers(dirs)
        tset = load_training_set(settings, dirs)
        eset = ex.load(dirs.preference_db, settings.train)
        summary: dict[str, Any] = {"version": None, "pairs": tset.summary(), "corrupt_pairs": tset.skipped,
                                   "examples": eset.summary(settings.train.seed)}
        try:
            chosen, why = how.choose(settings.train, tset, eset)
        except ds.NotEnoughPairs as e:
            if not if_due:
                raise
            summary.update(due=False, reason=str(e), seconds=0.0)
            return summary
        summary.update(method=chosen, method_reason=why)
        if chosen == "kto":
            summary["corrupt_pairs"] = eset.skipped  # corrupt thumbs too
        if if_due:
            fresh = how.new_signal(chosen, tset, eset, dirs)
            if fresh["new"] < settings.train.min_new_pairs:
                summary.update(due=False, reason=f"{fresh['what']}, train.min_new_pairs is "
                                                 f"{settings.train.min_new_pairs}", seconds=0.0)
                return summary
        stage("plan")
        plan, base = plan_for(settings, dirs, device)
        summary["plan"] = plan.to_dict()
        if chosen == "dpo":
            summary["variants"] = describe_variants(plan.variants, tset.train)
        if chosen == "kto":
            from .kto import kto_section

            counts = eset.counts(settings.train.seed)
            summary["kto"] = kto_section(plan, counts, ex.kto_weights(**counts))
        if dry_run:
            summary.update(dry_run=True, seconds=round(time.perf_counter() - started, 2))
            return summary
        if plan.device == "cuda":
            _require_bitsandbytes()
        if limit_memory and plan.memory.get("budget_gib") and plan.device == "cpu":
            limit = process_limit_gib(plan)
            if memory.limit_process(limit):
                summary["memory_limit_gib"] = limit
        try:
            summary.update(_train_version(settings, dirs, plan, base, chosen, tset if chosen == "dpo" else eset,
                                          stage, progress, callbacks, trainer_overrides or {}))
        except OSError as exc:  # full disk, permissions: the temp version is gone already
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS):
                raise
            raise UserError(f"could not write the new version under {registry.adapters_dir(dirs)} "
                            f"({exc.strerror or exc}); no version was written; free disk space and retry") from None
        except (MemoryError, RuntimeError) as exc:
            if not memory.is_out_of_memory(exc):
                raise
            allowed = summary.get("memory_limit_gib") or plan.memory.get("budget_gib")
            raise OutOfMemory(f"retrain ran out of memory (planned {plan.memory.get('total_gib')} GiB, allowed "
                              f"{allowed} GiB); no version was written; lower train.max_length or "
                              "train.batch_size, or raise train.max_memory_gb") from None
        summary["seconds"] = round(time.perf_counter() - started, 1)
        return summary


def process_limit_gib(plan) -> float:
    """The data-segment limit for a run held to its budget: the budget, or the plan's estimate
    when that is higher, plus room for what the address space holds beyond resident memory
    (thread stacks, allocator arenas): a limit at the estimate itself would fail healthy runs."""
    need = max(plan.memory["total_gib"], plan.memory.get("materialise_gib", 0.0))
    return round(max(plan.memory["budget_gib"], need) * 1.25 + 1.0, 2)


def _train_version(settings, dirs: AppDirs, plan, base, chosen: str, data, stage, progress, callbacks,
                   overrides: dict) -> dict[str, Any]:
    """materialise -> train -> export -> gate, all in the version's staging directory -> publish ->
    mark the pairs trained -> activate a winner. A run killed or interrupted before the publish
    leaves no version (the staging directory goes, or the next run removes it)."""
    from .base import materialise
    from .promote import activate, gate_version

    stage("materialise")
    location = materialise(base)
    train = _train_kto if chosen == "kto" else _train
    headline = (f"{len(data.train)} answers, {len(data.heldout)} held out (KTO)" if chosen == "kto"
                else f"{len(data.train)} pairs, {len(data.heldout)} held out")
    with _version_run(dirs, plan, headline) as (version, tmp, runlog):
        stage("train")
        run = train(plan, location, data, version, tmp, runlog, settings, progress, callbacks, overrides)
        gc.collect()  # the trainer and model go before llama.cpp loads the gate's copy
        out = {"version": version, "path": str(registry.adapters_dir(dirs) / version), **run.summary}
        if settings.train.promote:  # export -> gate (llama.cpp, held-out pairs or answers), before publishing
            out["gate"] = gate_version(settings, dirs, tmp, version, run.heldout, settings.vault, method=chosen,
                                       on_stage=stage)
    _mark_trained(dirs, run.trained_ids, version)
    if out.get("gate", {}).get("promoted"):
        stage("activate")
        out["gate"]["activation"] = activate(dirs, version)
    return out


def _require_bitsandbytes() -> None:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UserError("a CUDA GPU was found but bitsandbytes is not installed; pip install 'vault-agent[cuda]' "
                        "for 4-bit QLoRA") from None


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


@contextlib.contextmanager
def _version_run(dirs: AppDirs, plan, headline: str):
    """(version, temp dir, run logger): train.log goes into the version, which is published only
    if the block finishes."""
    with registry.staging(dirs) as (version, tmp):
        handler = logging.FileHandler(tmp / "train.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        runlog = logging.getLogger(f"vault_agent.train.run.{version}")
        runlog.setLevel(logging.INFO)
        runlog.addHandler(handler)
        try:
            runlog.info("training %s on %s; plan %s", version, headline, json.dumps(plan.to_dict(), default=str))
            yield version, tmp, runlog
        except BaseException as exc:
            runlog.error("failed: %s: %s", type(exc).__name__, exc)  # the log goes with the temp dir
            raise
        finally:
            runlog.removeHandler(handler)
            handler.close()


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


@dataclasses.dataclass
class RunResult:
    """What one method's training gives the pipeline."""

    summary: dict[str, Any]  # for the retrain summary
    heldout: list  # held-out pairs or examples (prompts fitted to max_length), for the gate
    trained_ids: list[str]  # pairs to mark trained once the version is published


def _fit_to_length(tokenizer, items: list, answers, max_length: int, runlog, what: str) -> tuple[list, dict]:
    """Prompts cut from the left to fit max_length (truncate.py); counted, and logged."""
    from .truncate import fit_all

    kept, cut, left_out = fit_all(tokenizer, items, answers, max_length)
    if cut or left_out:
        runlog.info("%d %s cut from the left to fit train.max_length=%d, %d left out (no room even then)",
                    cut, what, max_length, left_out)
    return kept, {"prompts_cut": cut, "too_long_left_out": left_out}


def _memory_used(plan) -> dict[str, Any]:
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
    plot_note = _plot(history, tmp / "training.png")
    if plot_note:
        metrics["plot"] = plot_note
    registry.write_json(tmp / "metrics.json", metrics)


def _train(plan, location: str, tset: ds.TrainingSet, version: str, tmp: Path, runlog, settings, progress,
           callbacks, overrides: dict) -> RunResult:
    """DPO on pairs."""
    _quiet_libraries()
    import torch

    from ..feedback.pairs import utcnow
    from .dpo import completion_logprobs, load_model, make_trainer, preference_metrics, reward_metrics

    torch.manual_seed(settings.train.seed)
    trained_at = utcnow()
    max_len = settings.train.max_length
    history: list[dict] = []
    model, tokenizer = load_model(plan, location)
    sides = lambda p: [p.chosen, p.rejected]  # noqa: E731
    train_pairs, lengths = _fit_to_length(tokenizer, tset.train, sides, max_len, runlog, "training pairs")
    heldout_pairs, _ = _fit_to_length(tokenizer, tset.heldout, sides, max_len, runlog, "held-out pairs")
    tset = dataclasses.replace(tset, train=train_pairs, heldout=heldout_pairs)
    ds.require_enough(tset, settings.train)
    variants = describe_variants(plan.variants, tset.train)  # after pairs that cannot fit left out
    before = completion_logprobs(model, tokenizer, tset.heldout, max_len)
    trainer = make_trainer(plan, model, tokenizer, tset.train_records(), str(tmp / "trainer"),
                           _trainer_callbacks(progress, history, runlog) + list(callbacks or []), **overrides)
    result = _fit_and_save(trainer, tokenizer, tmp)
    after = completion_logprobs(trainer.model, tokenizer, tset.heldout, max_len)
    b, a = preference_metrics(before), preference_metrics(after)
    heldout = {"pairs": len(tset.heldout), "accuracy_before": b["accuracy"], "accuracy_after": a["accuracy"],
               "margin_before": b["margin"], "margin_after": a["margin"],
               **reward_metrics(before, after, settings.train.beta)}
    used = _memory_used(plan)
    runlog.info("done: %d steps, held-out %s, memory %s", result.global_step, json.dumps(heldout), json.dumps(used))
    _write_metrics(tmp, version, result, history, lengths, heldout, trained_at, method="dpo", variants=variants,
                   memory=used)
    registry.write_json(tmp / "pairs.json", {"train": [p.id for p in tset.train],
                                             "heldout": [p.id for p in tset.heldout],
                                             "corrupt_skipped": tset.skipped})
    registry.write_json(tmp / "config.json", {"plan": plan.to_dict(), "train": settings.train.model_dump(),
                                              "base_location": location})
    return RunResult({"steps": result.global_step, "variants": variants, **lengths,
                      "train_loss": result.training_loss, "heldout": heldout, "memory": used},
                     tset.heldout, [p.id for p in tset.train])


def _train_kto(plan, location: str, eset, version: str, tmp: Path, runlog, settings, progress, callbacks,
               overrides: dict) -> RunResult:
    """KTO on single answers: thumbs, and pairs split into a desirable and an undesirable answer."""
    _quiet_libraries()
    import torch

    from ..feedback.pairs import utcnow
    from . import examples as ex
    from .dpo import load_model
    from .kto import example_logprobs, heldout_change, kto_section, make_trainer

    torch.manual_seed(settings.train.seed)
    trained_at = utcnow()  # thumbs given from now on count as new for the next --if-due
    max_len, seed = settings.train.max_length, settings.train.seed
    history: list[dict] = []
    model, tokenizer = load_model(plan, location)
    answer = lambda e: [e.completion]  # noqa: E731
    train_examples, lengths = _fit_to_length(tokenizer, eset.train, answer, max_len, runlog, "training answers")
    heldout_examples, _ = _fit_to_length(tokenizer, eset.heldout, answer, max_len, runlog, "held-out answers")
    eset = dataclasses.replace(eset, train=train_examples, heldout=heldout_examples)
    ex.require_enough(eset, settings.train)
    counts = eset.counts(seed)
    weights = ex.kto_weights(**counts)
    runlog.info("KTO %s", json.dumps(kto_section(plan, counts, weights)))
    before = example_logprobs(model, tokenizer, eset.heldout, max_len)
    trainer = make_trainer(plan, model, tokenizer, [e.record() for e in eset.train_examples(seed)],
                           str(tmp / "trainer"), weights,
                           _trainer_callbacks(progress, history, runlog) + list(callbacks or []), **overrides)
    result = _fit_and_save(trainer, tokenizer, tmp)
    after = example_logprobs(trainer.model, tokenizer, eset.heldout, max_len)
    heldout = heldout_change(eset.heldout, before, after)
    used = _memory_used(plan)
    runlog.info("done: %d steps, held-out %s, memory %s", result.global_step, json.dumps(heldout), json.dumps(used))
    _write_metrics(tmp, version, result, history, lengths, heldout, trained_at, method="kto",
                   kto=kto_section(plan, counts, weights), memory=used)
    pair_ids = sorted({e.group for e in eset.train if e.source != ex.THUMB})
    registry.write_json(tmp / "pairs.json", {"method": "kto", "train": pair_ids,
                                             "thumbs": [e.id for e in eset.train if e.source == ex.THUMB],
                                             "heldout": sorted({e.group for e in eset.heldout}),
                                             "corrupt_skipped": eset.skipped})
    registry.write_json(tmp / "config.json", {"plan": plan.to_dict(), "train": settings.train.model_dump(),
                                              "base_location": location})
    return RunResult({"steps": result.global_step, **lengths, "train_loss": result.training_loss,
                      "heldout": heldout, "kto": kto_section(plan, counts, weights), "memory": used},
                     eset.heldout, pair_ids)


def _mark_trained(dirs: AppDirs, ids: list[str], version: str) -> None:
    from ..feedback.store import PreferenceLog

    with PreferenceLog(dirs.preference_db) as plog:
        plog.mark_trained(ids, version)
