"""`vault-agent retrain`: log -> method (DPO on pairs, KTO on single answers, strategies.py) -> plan
-> LoRA -> a new adapter version. One pipeline for both methods: lock -> stage -> fit -> publish ->
mark -> promote.

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
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from ..paths import AppDirs
from . import dataset as ds
from . import memory, registry, strategies
from . import method as how
from .fit import Progress, TrainingFailed, fit
from .schedule import TrainingLock

if TYPE_CHECKING:
    from pathlib import Path

    from ..config import LLMSettings, Settings, TrainSettings
    from .base import BaseModel
    from .dpo import TrainingPlan

log = logging.getLogger(__name__)


class OutOfMemory(TrainingFailed):
    pass


@dataclasses.dataclass
class RetrainResult:
    """What one retrain did (`retrain --json` prints to_dict()). Fields stay None where the run
    did not get that far: no method when nothing could train, no version for a dry run or a run
    that was not due."""

    pairs: dict[str, Any]  # the DPO training set's counts (dataset.TrainingSet.summary)
    examples: dict[str, Any]  # the single answers' counts, for KTO (examples.ExampleSet.summary)
    corrupt_pairs: list[str]  # "id: why" for each row the chosen method skipped
    version: str | None = None
    method: str | None = None  # "dpo" or "kto"
    method_reason: str | None = None
    due: bool | None = None  # False when --if-due found too little new feedback
    reason: str | None = None  # why it was not due
    plan: dict[str, Any] | None = None
    variants: dict[str, list[str]] | None = None  # DPO: the loss terms that ran, and notes
    kto: dict[str, Any] | None = None  # KTO: its balance and weights
    dry_run: bool | None = None
    memory_limit_gib: float | None = None  # what the process was held to (--limit-memory)
    path: str | None = None
    steps: int | None = None
    train_loss: float | None = None
    prompts_cut: int | None = None
    too_long_left_out: int | None = None
    heldout: dict[str, Any] | None = None
    memory: dict[str, Any] | None = None  # estimate and peak
    gate: dict[str, Any] | None = None  # None when train.promote is off
    seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The `--json` object: these five always, the rest only when set."""
        out = {"version": self.version, "pairs": self.pairs, "heldout": self.heldout, "seconds": self.seconds,
               "corrupt_pairs": self.corrupt_pairs}
        for key in ("examples", "method", "method_reason", "kto", "variants", "due", "reason", "dry_run", "plan",
                    "path", "steps", "train_loss", "prompts_cut", "too_long_left_out", "memory", "memory_limit_gib",
                    "gate"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


def plan_for(train: TrainSettings, llm: LLMSettings, dirs: AppDirs,
             device: str | None = None) -> tuple[TrainingPlan, BaseModel]:
    """The plan with the base resolved, fitted to the memory budget (nothing is loaded; DoesNotFit
    in one line when even the leanest plan needs more than the budget)."""
    from .base import resolve_base
    from .dpo import ModelDims, detect_device, dims_from_gguf, make_plan

    device = device or detect_device()
    base = resolve_base(train, llm, dirs)
    dims = None
    try:
        if base.ready:
            from transformers import AutoConfig

            dims = ModelDims.from_config(AutoConfig.from_pretrained(base.location))
        elif base.gguf is not None:
            dims = dims_from_gguf(base.gguf)
    except Exception as exc:  # noqa: BLE001 - without dims the plan takes the leanest layout
        log.warning("no memory estimate: %s", exc)
    budget = memory.budget(train.max_memory_gb, device)
    plan = make_plan(train, device=device,
                     base={"source": base.source, "location": base.location,
                           "gguf": str(base.gguf) if base.gguf else None}, dims=dims, budget=budget)
    if dims is not None and not base.ready:  # this run materialises the GGUF first: its own peak
        plan.memory["materialise_gib"] = memory.check_materialise(dims, budget)
    return plan, base


def retrain(settings: Settings, dirs: AppDirs, *, if_due: bool = False, dry_run: bool = False,
            device: str | None = None, progress: Progress | None = None, callbacks: list | None = None,
            trainer_overrides: dict | None = None, method: str | None = None,
            on_stage: Callable[[str], None] | None = None, limit_memory: bool = False) -> RetrainResult:
    """Train one version. Raises UserError subclasses for what a user can fix (too few pairs,
    another run holding the lock, divergence, a bad --method, a plan that does not fit the memory
    budget). `on_stage` hears each stage as it starts (plan, materialise, train, export, gate,
    activate); `limit_memory` holds this process to the plan's budget (the nightly run), so a run
    that outgrows it fails alone."""
    stage = on_stage or (lambda name: None)
    settings = how.with_method(settings, method)
    train = settings.train
    dirs.ensure()
    from .base import refuse_untrainable, resolve_base

    refuse_untrainable(resolve_base(train, settings.llm, dirs))  # in one line, before pairs or models load
    # A dry run reads and plans only, so it needs no lock and may run beside a training.
    with contextlib.nullcontext() if dry_run else TrainingLock(dirs):
        started = time.perf_counter()
        if not dry_run:
            registry.remove_leftovers(dirs)
        methods = strategies.load(dirs.preference_db, train)
        tset, eset = methods["dpo"].data, methods["kto"].data  # pairs, and single answers
        result = RetrainResult(pairs=tset.summary(), examples=eset.summary(train.seed), corrupt_pairs=tset.skipped)
        try:
            chosen, why = how.choose(train, tset, eset)
        except ds.NotEnoughPairs as e:
            if not if_due:
                raise
            return dataclasses.replace(result, due=False, reason=str(e), seconds=0.0)
        run = methods[chosen]
        result = dataclasses.replace(result, method=chosen, method_reason=why, corrupt_pairs=run.data.skipped)
        if if_due:
            new, what = run.new_signal(dirs)
            if new < train.min_new_pairs:
                return dataclasses.replace(result, due=False, seconds=0.0,
                                           reason=f"{what}, train.min_new_pairs is {train.min_new_pairs}")
        stage("plan")
        plan, base = plan_for(train, settings.llm, dirs, device)
        result = dataclasses.replace(result, plan=plan.to_dict(), **run.describe(plan))
        if dry_run:
            return dataclasses.replace(result, dry_run=True, seconds=round(time.perf_counter() - started, 2))
        if plan.device == "cuda":
            _require_bitsandbytes()
        if limit_memory and plan.memory.get("budget_gib") and plan.device == "cpu":
            limit = process_limit_gib(plan)
            if memory.limit_process(limit):
                result = dataclasses.replace(result, memory_limit_gib=limit)
        try:
            done = train_version(settings, dirs, plan, base, run, stage, progress, callbacks, trainer_overrides or {})
        except OSError as exc:  # full disk, permissions: the temp version is gone already
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS):
                raise
            raise UserError(f"could not write the new version under {registry.adapters_dir(dirs)} "
                            f"({exc.strerror or exc}); no version was written; free disk space and retry") from None
        except (MemoryError, RuntimeError) as exc:
            if not memory.is_out_of_memory(exc):
                raise
            allowed = result.memory_limit_gib or plan.memory.get("budget_gib")
            raise OutOfMemory(f"retrain ran out of memory (planned {plan.memory.get('total_gib')} GiB, allowed "
                              f"{allowed} GiB); no version was written; lower train.max_length or "
                              "train.batch_size, or raise train.max_memory_gb") from None
        return dataclasses.replace(result, **done, seconds=round(time.perf_counter() - started, 1))


def process_limit_gib(plan: TrainingPlan) -> float:
    """The data-segment limit for a run held to its budget: the budget, or the plan's estimate
    when that is higher, plus room for what the address space holds beyond resident memory
    (thread stacks, allocator arenas): a limit at the estimate itself would fail healthy runs."""
    need = max(plan.memory["total_gib"], plan.memory.get("materialise_gib", 0.0))
    return round(max(plan.memory["budget_gib"], need) * 1.25 + 1.0, 2)


def train_version(settings: Settings, dirs: AppDirs, plan: TrainingPlan, base: BaseModel,
                  run: strategies.TrainingMethod, stage: Callable[[str], None], progress: Progress | None,
                  callbacks: list | None, overrides: dict) -> dict[str, Any]:
    """materialise -> fit -> export -> gate, all in the version's staging directory -> publish ->
    mark the pairs trained -> activate a winner. A run killed or interrupted before the publish
    leaves no version (the staging directory goes, or the next run removes it). Returns the
    result's fields from version on."""
    from .base import materialise
    from .promote import activate, gate_version

    stage("materialise")
    location = materialise(base)
    with _version_run(dirs, plan, run.headline()) as (version, tmp, runlog):
        record_base(settings, tmp)
        stage("train")
        out = {"version": version, "path": str(registry.adapters_dir(dirs) / version),
               **fit(plan, location, run, version, tmp, runlog, settings.train, progress, callbacks, overrides)}
        gc.collect()  # the trainer and model go before llama.cpp loads the gate's copy
        if settings.train.promote:  # export -> gate (llama.cpp, held-out pairs or answers), before publishing
            out["gate"] = gate_version(settings, dirs, tmp, version, run.gate_inputs(), settings.vault,
                                       method=run.name, on_stage=stage)
    _mark_trained(dirs, run.trained_ids(), version)
    if out.get("gate", {}).get("promoted"):
        stage("activate")
        out["gate"]["activation"] = activate(dirs, version)
    return out


def record_base(settings: Settings, version_dir: Path) -> None:
    """The version's GGUF LoRA is for the served GGUF: record which one (file fingerprint and
    architecture), so activation and model switches never apply it to another base."""
    from ..llm.backend import resolve_model_path
    from ..models.fingerprint import base_record
    from .active import BASE_NAME

    registry.write_json(version_dir / BASE_NAME, base_record(resolve_model_path(settings.llm.model_path)))


def _require_bitsandbytes() -> None:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UserError("a CUDA GPU was found but bitsandbytes is not installed; pip install 'vault-agent[cuda]' "
                        "for 4-bit QLoRA") from None


@contextlib.contextmanager
def _version_run(dirs: AppDirs, plan: TrainingPlan, headline: str):
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


def _mark_trained(dirs: AppDirs, ids: list[str], version: str) -> None:
    from ..feedback.store import PreferenceLog

    with PreferenceLog(dirs.preference_db) as plog:
        plog.mark_trained(ids, version)
