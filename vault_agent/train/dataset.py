"""The training set from the preference log: user pairs weighted above synthetic ones,
duplicates dropped, and a held-out split that never trains.

The split is by a hash of the pair id (sampling.py), so a pair stays on its side across runs and
versions are compared on the same held-out pairs. Rows come read-only from feedback/reader.py and
are parsed one by one: a corrupt row is skipped and reported, the rest still train.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..feedback import reader
from . import sampling
from .sampling import SOURCES


class NotEnoughPairs(UserError):
    pass


@dataclass
class Pair:
    id: str
    source: str
    prompt: list[dict[str, str]]
    chosen: str
    rejected: str
    trained_in_version: str | None = None
    origin_id: str | None = None  # a synthetic pair's "<chunk id>:<content hash>" (the gate's answer check)

    def record(self, margin: float = 0.0) -> dict[str, Any]:
        """TRL's conversational preference format, plus two per-pair columns the DPO variants read
        (variant_trainer.py): the pair's margin (train.source_margins) and whether its chosen answer
        is the user's own correction (the SFT term trains on those)."""
        return {"prompt": self.prompt, "chosen": [{"role": "assistant", "content": self.chosen}],
                "rejected": [{"role": "assistant", "content": self.rejected}],
                "margin": float(margin), "is_correction": self.source == "correction"}

    @property
    def chunk_id(self) -> str | None:
        """The index chunk a synthetic pair was made from (None for the user's own signals)."""
        return self.origin_id.split(":", 1)[0] if self.source == "synthetic" and self.origin_id else None

    @property
    def content_key(self) -> str:
        return sampling.content_key(self.prompt, self.chosen, self.rejected)


@dataclass
class TrainingSet:
    train: list[Pair]
    heldout: list[Pair]
    weights: dict[str, float]
    skipped: list[str] = field(default_factory=list)  # "pair id: why" for corrupt rows
    duplicates: int = 0
    margins: dict[str, float] = field(default_factory=dict)  # train.source_margins

    def train_records(self) -> list[dict[str, Any]]:
        """Each train pair repeated by its source weight (fractions by a stable hash)."""
        rows = sampling.repeat_by_weight(self.train, lambda p: p.id, lambda p: self.weights.get(p.source, 1.0))
        return [p.record(self.margins.get(p.source, 0.0)) for p in rows]

    def by_source(self) -> dict[str, int]:
        counts = Counter(p.source for p in self.train)
        return {s: counts.get(s, 0) for s in SOURCES}

    def summary(self) -> dict[str, Any]:
        return {"train": len(self.train), "heldout": len(self.heldout), "by_source": self.by_source(),
                "weighted_train_rows": len(self.train_records()), "duplicates_dropped": self.duplicates,
                "corrupt_skipped": len(self.skipped), "new": sum(p.trained_in_version is None for p in self.train)}


def _parse(row: sqlite3.Row) -> Pair:
    prompt = json.loads(row["prompt_json"])
    if not isinstance(prompt, list) or not prompt or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in prompt
    ):
        raise ValueError("prompt is not a list of {role, content} messages")
    for side in ("chosen", "rejected"):
        if not isinstance(row[side], str) or not row[side].strip():
            raise ValueError(f"{side} answer is empty")
    if row["source"] not in SOURCES:
        raise ValueError(f"unknown source {row['source']!r}")
    return Pair(row["id"], row["source"], [{"role": m["role"], "content": m["content"]} for m in prompt],
                row["chosen"], row["rejected"], row["trained_in_version"],
                row["origin_id"] if "origin_id" in row.keys() else None)


def read_pairs(db_path: Path) -> tuple[list[Pair], list[str]]:
    """Every pair in the log, oldest first, and 'id: why' for each row that could not be used."""
    pairs, skipped = [], []
    for row in reader.pair_rows(db_path):
        try:
            pairs.append(_parse(row))
        except (ValueError, TypeError) as exc:  # json errors are ValueErrors
            skipped.append(f"{row['id']}: {exc}")
    return pairs, skipped


def build(pairs: list[Pair], train, skipped: list[str] | None = None) -> TrainingSet:
    """Deduplicate (keeping the most trusted source) and split (`train`: TrainSettings)."""
    weights = sampling.source_weights(train)
    unique = sampling.dedupe(pairs, lambda p: p.content_key, lambda p: weights[p.source])
    kept, heldout = sampling.split(unique, lambda p: p.id, train.heldout_fraction)
    margins = {s: float(m) for s, m in train.source_margins.items()}
    return TrainingSet(kept, heldout, weights, list(skipped or []), len(pairs) - len(unique), margins)


def require_enough(ts: TrainingSet, train) -> None:
    if len(ts.train) < train.min_pairs:
        raise NotEnoughPairs(
            f"only {len(ts.train)} training pairs in the preference log (train.min_pairs is {train.min_pairs}); "
            "rate more answers or run `vault-agent pairs generate`, then retry")


def new_pairs(ts: TrainingSet) -> int:
    """Training pairs no version has used yet (what --if-due counts)."""
    return sum(p.trained_in_version is None for p in ts.train)
