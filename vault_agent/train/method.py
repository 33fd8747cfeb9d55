"""Which trainer a run uses (train.method / `retrain --method`), why, and what is missing when neither can run.

`auto` prefers DPO whenever the log holds train.min_pairs training pairs (a pair says which of two
answers is better, the stronger signal); otherwise KTO, which learns from every single thumb, when
there are that many single-answer examples. Nothing here loads a model.
"""

from __future__ import annotations

from ..errors import ConfigError
from . import dataset as ds
from . import examples as ex


def with_method(settings, method: str | None):
    """Settings with `--method` on top, validated like the config file (so KTO with
    train.source_margins is refused here, before anything loads)."""
    if method is None:
        return settings
    from pydantic import ValidationError

    from ..config import TrainSettings, one_line

    try:
        train = TrainSettings.model_validate({**settings.train.model_dump(), "method": method})
    except ValidationError as e:
        raise ConfigError(f"--method {method}: {one_line(e)}") from None
    return settings.model_copy(update={"train": train})


def _kto_min(train) -> int:
    return max(train.min_pairs, 2)  # KTO's batches need two answers


def choose(train, tset: ds.TrainingSet, eset: ex.ExampleSet) -> tuple[str, str]:
    """(method, a sentence saying why) or NotEnoughPairs saying what each method is missing."""
    n_pairs, n_examples = len(tset.train), len(eset.train)
    pairs_ok, examples_ok = n_pairs >= train.min_pairs, n_examples >= _kto_min(train)
    pairs_note = f"{n_pairs} training pairs for DPO (train.min_pairs is {train.min_pairs})"
    examples_note = f"{n_examples} single answers from thumbs and split pairs for KTO (it needs {_kto_min(train)})"
    if train.method == "dpo":
        if not pairs_ok:
            hint = "; or train on the thumbs with --method kto" if examples_ok else ""
            raise ds.NotEnoughPairs(f"only {pairs_note}, and {examples_note}; rate more answers or run "
                                    f"`vault-agent pairs generate`, then retry{hint}")
        return "dpo", f"train.method is dpo: trains on {n_pairs} preference pairs"
    if train.method == "kto":
        if not examples_ok:
            raise ds.NotEnoughPairs(f"only {examples_note}, and {pairs_note}; rate more answers, then retry")
        return "kto", f"train.method is kto: trains on {n_examples} single answers (thumbs, and pairs split in two)"
    if pairs_ok:
        return "dpo", (f"auto chose DPO: the log holds {n_pairs} preference pairs, enough to train "
                       f"(train.min_pairs is {train.min_pairs}), and a pair is the stronger signal")
    if examples_ok:
        return "kto", (f"auto chose KTO: only {n_pairs} preference pairs (DPO needs {train.min_pairs}), but "
                       f"{n_examples} thumbed or corrected answers are enough to learn from one by one")
    raise ds.NotEnoughPairs(f"not enough feedback to train: only {pairs_note}, and {examples_note}; rate more "
                            "answers or run `vault-agent pairs generate`, then retry")
