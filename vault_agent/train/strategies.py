"""DPO and KTO as two strategies behind one interface, so retrain.py runs one pipeline for both.

A method owns its data from the log to the version's files: what --if-due counts as new, fitting
its rows to train.max_length, the held-out scores before and after training, its trainer, what
the summary and metrics.json add (the DPO variants, or KTO's weights), pairs.json, which pairs
are marked trained, and what the gate judges. Loading the model, the divergence checks, memory
and the version directory are the pipeline's (retrain.py).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from . import dataset as ds
from . import examples as ex
from . import registry
from .variants import describe as describe_variants

if TYPE_CHECKING:
    from ..config import TrainSettings
    from ..paths import AppDirs
    from .dpo import TrainingPlan


class TrainingMethod(ABC):
    """One way to train a version on the log. `data` is the method's set: train and held-out rows
    (each with a `prompt`), and the corrupt rows it skipped."""

    name: ClassVar[str]  # "dpo" or "kto": the summary, metrics.json and the gate call the run this
    unit: ClassVar[str]  # what one row is, for the log lines: "pairs" or "answers"

    def __init__(self, train: TrainSettings, data: Any):
        self.train, self.data = train, data

    @abstractmethod
    def new_signal(self, dirs: AppDirs) -> tuple[int, str]:
        """(how much feedback no version trained on yet, the same in words): what --if-due counts."""

    @abstractmethod
    def headline(self) -> str:
        """What the run trains on, for train.log's first line."""

    @abstractmethod
    def describe(self, plan: TrainingPlan) -> dict[str, Any]:
        """What the summary and metrics.json add for this method, from the current rows."""

    @abstractmethod
    def answers(self, row) -> list[str]:
        """The answer texts of a row that must fit train.max_length beside its prompt."""

    @abstractmethod
    def require_enough(self) -> None:
        """NotEnoughPairs when too few training rows are left."""

    def fit_to_length(self, tokenizer, runlog) -> dict[str, int]:
        """Prompts cut from the left to fit train.max_length (truncate.py), rows that cannot fit
        left out, then the minimum size checked again. Returns the training rows' counts."""
        train, counts = self._fit(tokenizer, self.data.train, "training", runlog)
        heldout, _ = self._fit(tokenizer, self.data.heldout, "held-out", runlog)
        self.data = dataclasses.replace(self.data, train=train, heldout=heldout)
        self.require_enough()
        return counts

    def _fit(self, tokenizer, rows: list, what: str, runlog) -> tuple[list, dict[str, int]]:
        from .truncate import fit_all

        kept, cut, left_out = fit_all(tokenizer, rows, self.answers, self.train.max_length)
        if cut or left_out:
            runlog.info("%d %s %s cut from the left to fit train.max_length=%d, %d left out (no room even then)",
                        cut, what, self.unit, self.train.max_length, left_out)
        return kept, {"prompts_cut": cut, "too_long_left_out": left_out}

    @abstractmethod
    def scores(self, model, tokenizer) -> list:
        """The model's scores of the held-out rows (before and after training)."""

    @abstractmethod
    def make_trainer(self, plan: TrainingPlan, model, tokenizer, output_dir: str, callbacks: list,
                     overrides: dict):
        """The TRL trainer for the training rows."""

    @abstractmethod
    def heldout_metrics(self, before: list, after: list) -> dict[str, Any]:
        """What training changed on the held-out rows (the summary's and metrics.json's `heldout`)."""

    @abstractmethod
    def pairs_record(self) -> dict[str, Any]:
        """pairs.json: which rows trained, which were held out, which were corrupt."""

    @abstractmethod
    def trained_ids(self) -> list[str]:
        """The pairs to mark trained once the version is published."""

    def gate_inputs(self) -> list:
        """What the gate judges the version on: the held-out rows (prompts fitted to max_length)."""
        return self.data.heldout


class DPO(TrainingMethod):
    """Pairs: the chosen answer over the rejected one (dpo.py, with the variants of variants.py)."""

    name, unit = "dpo", "pairs"
    data: ds.TrainingSet

    def new_signal(self, dirs: AppDirs) -> tuple[int, str]:
        pairs = ds.new_pairs(self.data)
        return pairs, f"{pairs} new pairs"

    def headline(self) -> str:
        return f"{len(self.data.train)} pairs, {len(self.data.heldout)} held out"

    def describe(self, plan: TrainingPlan) -> dict[str, Any]:
        return {"variants": describe_variants(plan.variants, self.data.train)}

    def answers(self, row: ds.Pair) -> list[str]:
        return [row.chosen, row.rejected]

    def require_enough(self) -> None:
        ds.require_enough(self.data, self.train)

    def scores(self, model, tokenizer) -> list:
        from .dpo import completion_logprobs

        return completion_logprobs(model, tokenizer, self.data.heldout, self.train.max_length)

    def make_trainer(self, plan, model, tokenizer, output_dir, callbacks, overrides):
        from .dpo import make_trainer

        return make_trainer(plan, model, tokenizer, self.data.train_records(), output_dir, callbacks, **overrides)

    def heldout_metrics(self, before, after) -> dict[str, Any]:
        from .dpo import preference_metrics, reward_metrics

        b, a = preference_metrics(before), preference_metrics(after)
        return {"pairs": len(self.data.heldout), "accuracy_before": b["accuracy"], "accuracy_after": a["accuracy"],
                "margin_before": b["margin"], "margin_after": a["margin"],
                **reward_metrics(before, after, self.train.beta)}

    def pairs_record(self) -> dict[str, Any]:
        return {"train": [p.id for p in self.data.train], "heldout": [p.id for p in self.data.heldout],
                "corrupt_skipped": self.data.skipped}

    def trained_ids(self) -> list[str]:
        return [p.id for p in self.data.train]


class KTO(TrainingMethod):
    """Single answers, desirable or not: thumbs, and pairs split in two (kto.py, examples.py)."""

    name, unit = "kto", "answers"
    data: ex.ExampleSet

    def __init__(self, train: TrainSettings, data: ex.ExampleSet, pairs: ds.TrainingSet):
        super().__init__(train, data)
        self.pairs = pairs  # new pairs count as DPO counts them: a switch of method moves no due date

    def new_signal(self, dirs: AppDirs) -> tuple[int, str]:
        """Pairs no version trained on, and unpaired thumbs given after the newest version started
        training (a thumb leaves no mark in the log when it trains)."""
        pairs = ds.new_pairs(self.pairs)
        thumbs = ex.new_thumbs(self.data, registry.last_trained_at(dirs))
        return pairs + thumbs, f"{pairs} new pairs and {thumbs} new thumbs"

    def headline(self) -> str:
        return f"{len(self.data.train)} answers, {len(self.data.heldout)} held out (KTO)"

    def weights(self) -> tuple[dict[str, int], dict[str, float]]:
        """(desirable / undesirable training rows, KTO's weights for that balance)."""
        counts = self.data.counts(self.train.seed)
        return counts, ex.kto_weights(**counts)

    def describe(self, plan: TrainingPlan) -> dict[str, Any]:
        from .kto import kto_section

        return {"kto": kto_section(plan, *self.weights())}

    def answers(self, row: ex.Example) -> list[str]:
        return [row.completion]

    def require_enough(self) -> None:
        ex.require_enough(self.data, self.train)

    def scores(self, model, tokenizer) -> list:
        from .kto import example_logprobs

        return example_logprobs(model, tokenizer, self.data.heldout, self.train.max_length)

    def make_trainer(self, plan, model, tokenizer, output_dir, callbacks, overrides):
        from .kto import make_trainer

        records = [e.record() for e in self.data.train_examples(self.train.seed)]
        return make_trainer(plan, model, tokenizer, records, output_dir, self.weights()[1], callbacks, **overrides)

    def heldout_metrics(self, before, after) -> dict[str, Any]:
        from .kto import heldout_change

        return heldout_change(self.data.heldout, before, after)

    def pairs_record(self) -> dict[str, Any]:
        return {"method": "kto", "train": self.trained_ids(),
                "thumbs": [e.id for e in self.data.train if e.source == ex.THUMB],
                "heldout": sorted({e.group for e in self.data.heldout}), "corrupt_skipped": self.data.skipped}

    def trained_ids(self) -> list[str]:
        return sorted({e.group for e in self.data.train if e.source != ex.THUMB})


def load(db_path: Path, train: TrainSettings) -> dict[str, TrainingMethod]:
    """Both methods with their data from the log (read once), by name."""
    pairs, bad_pairs = ds.read_pairs(db_path)
    thumbs, bad_thumbs = ex.read_thumbs(db_path)
    tset = ds.build(pairs, train, bad_pairs)
    return {"dpo": DPO(train, tset), "kto": KTO(train, ex.build(pairs, thumbs, train, bad_pairs + bad_thumbs), tset)}
