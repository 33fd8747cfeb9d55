"""What DPO's pairs and KTO's single answers share on their way to a trainer: source weights,
dropping duplicates, the held-out split, and repeating rows by weight.

Everything is decided by hashes, never by chance: a pair stays on its side of the split across
runs (versions are compared on the same held-out pairs), and a weight of 1.5 repeats the same
half of the rows every time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from typing import TypeVar

SOURCES = ("comparison", "correction", "rating", "synthetic")

T = TypeVar("T")


def bucket(key: str) -> float:
    """A stable number in [0, 1) for a key (a pair id, a rating id)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def content_key(prompt: list[dict[str, str]], *texts: str) -> str:
    """The same conversation up to whitespace and case: pairs and KTO examples deduplicate by it."""
    norm = lambda s: " ".join(s.split()).casefold()  # noqa: E731
    blob = json.dumps([[m["role"], norm(m["content"])] for m in prompt]) + "".join("\0" + norm(t) for t in texts)
    return hashlib.sha256(blob.encode()).hexdigest()


def source_weights(train) -> dict[str, float]:
    """train.source_weights for every pair source (1.0 where unset)."""
    return {s: float(train.source_weights.get(s, 1.0)) for s in SOURCES}


def dedupe(items: list[T], key: Callable[[T], str], trust: Callable[[T], float]) -> list[T]:
    """One item per key, the most trusted (the first among equals), in their original order."""
    best: dict[str, T] = {}
    for item in items:
        k = key(item)
        if k not in best or trust(item) > trust(best[k]):
            best[k] = item
    return [item for item in items if best[key(item)] is item]


def split(items: list[T], group: Callable[[T], str], fraction: float) -> tuple[list[T], list[T]]:
    """(train, held out): a group is held out when its bucket is under `fraction`, all its items
    together. With none held out but two groups or more (and fraction > 0), the group with the
    lowest bucket is (so a small log still has something to measure on)."""
    groups = sorted({group(i) for i in items}, key=bucket)
    held = {g for g in groups if bucket(g) < fraction}
    if not held and len(groups) >= 2 and fraction > 0:
        held = {groups[0]}
    return [i for i in items if group(i) not in held], [i for i in items if group(i) in held]


def repeat_by_weight(items: Iterable[T], row_id: Callable[[T], str], weight: Callable[[T], float]) -> list[T]:
    """Each item int(w) times, plus once more for a stable share (the fraction of w) of them."""
    out: list[T] = []
    for item in items:
        w = weight(item)
        out.extend([item] * max(int(w) + (bucket(row_id(item) + "#w") < w - int(w)), 0))
    return out
