"""The training set from the preference log: user pairs weighted above synthetic ones,
duplicates dropped, and a held-out split that never trains.

The split is by a hash of the pair id, so a pair stays on its side across runs and versions
are compared on the same held-out pairs. Rows are read one by one through a read-only
connection: a corrupt row is skipped and reported, the rest still train.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError

SOURCES = ("comparison", "correction", "rating", "synthetic")


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

    def record(self, margin: float = 0.0) -> dict[str, Any]:
        """TRL's conversational preference format, plus two per-pair columns the DPO variants read
        (variant_trainer.py): the pair's margin (train.source_margins) and whether its chosen answer
        is the user's own correction (the SFT term trains on those)."""
        return {"prompt": self.prompt, "chosen": [{"role": "assistant", "content": self.chosen}],
                "rejected": [{"role": "assistant", "content": self.rejected}],
                "margin": float(margin), "is_correction": self.source == "correction"}

    @property
    def content_key(self) -> str:
        return content_key(self.prompt, self.chosen, self.rejected)


def content_key(prompt: list[dict[str, str]], *texts: str) -> str:
    """The same conversation up to whitespace and case: pairs and KTO examples deduplicate by it."""
    norm = lambda s: " ".join(s.split()).casefold()  # noqa: E731
    blob = json.dumps([[m["role"], norm(m["content"])] for m in prompt]) + "".join("\0" + norm(t) for t in texts)
    return hashlib.sha256(blob.encode()).hexdigest()


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
        out = []
        for p in self.train:
            w = self.weights.get(p.source, 1.0)
            times = int(w) + (heldout_bucket(p.id + "#w") < w - int(w))
            out.extend([p.record(self.margins.get(p.source, 0.0))] * max(times, 0))
        return out

    def by_source(self) -> dict[str, int]:
        counts = Counter(p.source for p in self.train)
        return {s: counts.get(s, 0) for s in SOURCES}

    def summary(self) -> dict[str, Any]:
        return {"train": len(self.train), "heldout": len(self.heldout), "by_source": self.by_source(),
                "weighted_train_rows": len(self.train_records()), "duplicates_dropped": self.duplicates,
                "corrupt_skipped": len(self.skipped), "new": sum(p.trained_in_version is None for p in self.train)}


def heldout_bucket(key: str) -> float:
    """A stable number in [0, 1) for a pair id."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


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
                row["chosen"], row["rejected"], row["trained_in_version"])


def read_rows(db_path: Path, sql: str) -> list[sqlite3.Row]:
    """Rows of a read-only query on the log; none when the log or its table does not exist yet."""
    if not Path(db_path).exists():
        return []
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise UserError(f"cannot read the preference log {db_path}: {exc}") from None
    finally:
        conn.close()


def read_pairs(db_path: Path) -> tuple[list[Pair], list[str]]:
    """Every pair in the log, oldest first, and 'id: why' for each row that could not be used."""
    rows = read_rows(db_path, "SELECT * FROM pairs ORDER BY created, rowid")
    pairs, skipped = [], []
    for row in rows:
        try:
            pairs.append(_parse(row))
        except (ValueError, TypeError) as exc:  # json errors are ValueErrors
            skipped.append(f"{row['id']}: {exc}")
    return pairs, skipped


def build(pairs: list[Pair], settings, skipped: list[str] | None = None) -> TrainingSet:
    """Deduplicate (keeping the most trusted source), split, and check the minimum size."""
    weights = {s: float(settings.source_weights.get(s, 1.0)) for s in SOURCES}
    best: dict[str, Pair] = {}
    for p in pairs:
        key = p.content_key
        if key not in best or weights[p.source] > weights[best[key].source]:
            best[key] = p
    unique = [p for p in pairs if best.get(p.content_key) is p]
    heldout = [p for p in unique if heldout_bucket(p.id) < settings.heldout_fraction]
    if not heldout and len(unique) >= 2 and settings.heldout_fraction > 0:
        heldout = [min(unique, key=lambda p: heldout_bucket(p.id))]  # stable: the lowest bucket
    held = {p.id for p in heldout}
    train = [p for p in unique if p.id not in held]
    margins = {s: float(m) for s, m in getattr(settings, "source_margins", {}).items()}
    return TrainingSet(train, heldout, weights, list(skipped or []), len(pairs) - len(unique), margins)


def require_enough(ts: TrainingSet, settings) -> None:
    if len(ts.train) < settings.min_pairs:
        raise NotEnoughPairs(
            f"only {len(ts.train)} training pairs in the preference log (train.min_pairs is {settings.min_pairs}); "
            "rate more answers or run `vault-agent pairs generate`, then retry")


def new_pairs(ts: TrainingSet) -> int:
    """Training pairs no version has used yet (what --if-due counts)."""
    return sum(p.trained_in_version is None for p in ts.train)


def steps_per_epoch(ts: TrainingSet, batch_size: int) -> int:
    return max(1, math.ceil(len(ts.train_records()) / batch_size))
