"""Single-answer training examples for KTO: every live thumb, and every pair split into both sides.

- A live thumb (not undone; the latest one when a response somehow has several) on a response that
  is in no 'rating' pair is one example: prompt = the response's messages as stored (assistant turns
  left out), completion = its answer, desirable for thumbs up.
- A pair of any source is split: chosen desirable, rejected undesirable. A correction pair is the
  user's text (desirable) over the original answer (undesirable); a 'rating' pair already carries
  the two thumbs it was made from, which is why those thumbs are not read again.
- The same (prompt, completion, label) twice counts once (an up-rated answer paired with two
  down-rated ones would otherwise train twice).

The held-out split hashes the pair id for pair halves (so KTO and DPO hold out the same pairs, both
halves together) and the rating id for thumbs. A corrupt row is skipped and reported.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..feedback import reader
from ..feedback.pairs import prompt_messages
from . import dataset as ds
from . import sampling

THUMB = "thumb"  # the source of an unpaired thumb's example; weighted like 'rating' pairs


@dataclass
class Example:
    id: str  # "<pair id>:chosen", "<pair id>:rejected" or the rating id
    group: str  # what the held-out split hashes: the pair id or the rating id
    source: str  # a pair source, or THUMB
    prompt: list[dict[str, str]]
    completion: str
    label: bool  # desirable
    created: str = ""
    trained_in_version: str | None = None
    chunk_id: str | None = None  # a synthetic pair's source chunk: the gate's answer check asks about it

    def record(self) -> dict[str, Any]:
        """TRL's conversational unpaired-preference format."""
        return {"prompt": self.prompt, "completion": [{"role": "assistant", "content": self.completion}],
                "label": self.label}

    @property
    def content_key(self) -> str:
        return sampling.content_key(self.prompt, self.completion, str(self.label))


@dataclass
class ExampleSet:
    train: list[Example]
    heldout: list[Example]
    weights: dict[str, float]
    skipped: list[str] = field(default_factory=list)  # "id: why" for corrupt pairs and thumbs
    duplicates: int = 0

    def weight(self, e: Example) -> float:
        return self.weights.get(weighed_as(e), 1.0)

    def train_examples(self, seed: int = 0) -> list[Example]:
        """Each train example repeated by its source weight, in a stable shuffled order: TRL's KTO
        reads batches in order (its KL term pairs neighbours), so labels must be mixed."""
        out = sampling.repeat_by_weight(self.train, lambda e: e.id, self.weight)
        order = sorted(range(len(out)), key=lambda i: (sampling.bucket(f"{seed}#{out[i].id}#{i}"), i))
        return [out[i] for i in order]

    def counts(self, seed: int = 0) -> dict[str, int]:
        rows = self.train_examples(seed)
        return {"desirable": sum(e.label for e in rows), "undesirable": sum(not e.label for e in rows)}

    def summary(self, seed: int = 0) -> dict[str, Any]:
        by_source = Counter(e.source for e in self.train)
        return {"train": len(self.train), "heldout": len(self.heldout),
                "desirable": sum(e.label for e in self.train), "undesirable": sum(not e.label for e in self.train),
                "by_source": {s: by_source.get(s, 0) for s in (THUMB, *sampling.SOURCES)},
                "weighted_train_rows": len(self.train_examples(seed)), "duplicates_dropped": self.duplicates,
                "corrupt_skipped": len(self.skipped)}


def _thumb(row: sqlite3.Row) -> Example:
    try:
        messages = json.loads(row["messages_json"])
    except ValueError:
        raise ValueError("messages are not valid JSON") from None
    if not isinstance(messages, list) or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages):
        raise ValueError("messages are not a list of {role, content} messages")
    prompt = prompt_messages(messages)
    if not prompt:
        raise ValueError("the response has no prompt messages")
    if not isinstance(row["answer"], str) or not row["answer"].strip():
        raise ValueError("the answer is empty")
    if row["value"] not in (1, -1):
        raise ValueError(f"rating value {row['value']!r} is not 1 or -1")
    return Example(row["id"], row["id"], THUMB, prompt, row["answer"], row["value"] == 1, row["created"])


def read_thumbs(db_path: Path) -> tuple[list[Example], list[str]]:
    """The live thumbs that no 'rating' pair already carries, the latest per response, oldest first;
    and 'rating id: why' for each that could not be used."""
    rows = reader.thumb_rows(db_path)
    latest = {row["response_id"]: row for row in rows}  # later rows overwrite: the latest thumb wins
    thumbs, skipped = [], []
    for row in rows:
        if latest[row["response_id"]] is not row:
            continue
        try:
            thumbs.append(_thumb(row))
        except (ValueError, TypeError) as exc:  # json errors are ValueErrors
            skipped.append(f"{row['id']}: {exc}")
    return thumbs, skipped


def split_pair(p: ds.Pair) -> list[Example]:
    return [Example(f"{p.id}:chosen", p.id, p.source, p.prompt, p.chosen, True, trained_in_version=p.trained_in_version,
                    chunk_id=p.chunk_id),
            Example(f"{p.id}:rejected", p.id, p.source, p.prompt, p.rejected, False,
                    trained_in_version=p.trained_in_version, chunk_id=p.chunk_id)]


def weighed_as(e: Example) -> str:
    """The source whose weight an example takes: an unpaired thumb weighs like a 'rating' pair."""
    return "rating" if e.source == THUMB else e.source


def build(pairs: list[ds.Pair], thumbs: list[Example], train, skipped: list[str] | None = None) -> ExampleSet:
    """Split pairs, add thumbs, drop duplicates (keeping the most trusted source), hold out by group
    (`train`: TrainSettings)."""
    weights = sampling.source_weights(train)
    every = [e for p in pairs for e in split_pair(p)] + thumbs
    unique = sampling.dedupe(every, lambda e: e.content_key, lambda e: weights[weighed_as(e)])
    kept, heldout = sampling.split(unique, lambda e: e.group, train.heldout_fraction)
    return ExampleSet(kept, heldout, weights, list(skipped or []), len(every) - len(unique))


def load(db_path: Path, train) -> ExampleSet:
    pairs, bad_pairs = ds.read_pairs(db_path)
    thumbs, bad_thumbs = read_thumbs(db_path)
    return build(pairs, thumbs, train, bad_pairs + bad_thumbs)


def kto_weights(desirable: int, undesirable: int) -> dict[str, float]:
    """KTO's balance for skewed data (Ethayarajh et al. 2024, section 4): lambda_D * n_D / (lambda_U * n_U)
    must lie in [1, 4/3]. The scarcer side is weighted up to make the ratio 1 (rounded up, so it
    never falls below 1); balanced data keeps both at 1."""
    n_d, n_u = max(desirable, 1), max(undesirable, 1)
    if n_d >= n_u:
        return {"desirable_weight": 1.0, "undesirable_weight": math.floor(n_d / n_u * 1000) / 1000}
    return {"desirable_weight": math.ceil(n_u / n_d * 1000) / 1000, "undesirable_weight": 1.0}


def require_enough(es: ExampleSet, train) -> None:
    if len(es.train) < max(train.min_pairs, 2):
        raise ds.NotEnoughPairs(
            f"only {len(es.train)} training examples (thumbs, and pairs split into both answers) for KTO "
            f"(it needs train.min_pairs = {max(train.min_pairs, 2)}); rate more answers, then retry")


def new_thumbs(es: ExampleSet, since: str | None) -> int:
    """Unpaired thumbs created after `since` (the newest version's training time; None: all)."""
    return sum(e.source == THUMB and (since is None or e.created > since) for e in es.train)
