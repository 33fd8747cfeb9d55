"""Held-out figures the gate already computed, kept for the next gate.

The held-out pairs are a stable split of a growing log (train/sampling.py buckets them by hash), so
tonight's gate meets mostly the pairs last night's scored, and the incumbent then was tonight's
candidate or the plain base. A pair's figures depend only on the base GGUF, the adapter GGUF and the
pair's text, so they are keyed by those three: a changed file or pair is simply scored again.

One JSON file per (base, adapter) under data/gate-scores/, rewritten at each gate with the pairs it
met, so it holds one held-out set, not every pair ever scored; files no gate has used for
STALE_DAYS days go.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from ..models.fingerprint import fingerprint
from .registry import write_json

STALE_DAYS = 30  # a file no gate has read or written for this long is removed


def pair_key(prompt: Any, chosen: str, rejected: str) -> str:
    return hashlib.sha256(json.dumps([prompt, chosen, rejected], sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:32]


def _file_key(base_gguf: Path, adapter: Path | None, served_as: str = "runtime") -> str:
    """The base by its fingerprint; an adapter by the SHA-256 of the whole file (tens of MB at
    most), because two adapters trained the same night share size and header, and by how it is
    served (a merged copy's figures differ a little from the runtime LoRA's)."""
    digest = hashlib.sha256(fingerprint(base_gguf).encode())
    if served_as != "runtime":
        digest.update(f"|{served_as}".encode())
    if adapter is not None:
        with open(adapter, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:32]


class ScoreCache:
    """{pair key: {"c": chosen mean log-prob, "r": rejected mean log-prob, "kl": summed KL to the
    base or None, "n": answer positions}} for one (base, adapter), plus perplexities by text set."""

    def __init__(self, root: Path, base_gguf: Path, adapter: Path | None, served_as: str = "runtime") -> None:
        self.path = root / f"{_file_key(base_gguf, adapter, served_as)}.json"
        try:
            data = json.loads(self.path.read_text())
            self.old_pairs, self.old_ppl = dict(data["pairs"]), dict(data.get("perplexity", {}))
        except (OSError, ValueError, KeyError, TypeError):  # none yet, or unreadable: score again
            self.old_pairs, self.old_ppl = {}, {}
        self.pairs: dict[str, dict] = {}
        self.perplexity: dict[str, float | None] = {}
        self.reused = 0

    def get(self, key: str) -> dict | None:
        entry = self.old_pairs.get(key)
        if entry is not None:
            self.reused += 1
            self.pairs[key] = entry
        return entry

    def put(self, key: str, entry: dict) -> None:
        self.pairs[key] = entry

    def get_perplexity(self, texts_key: str) -> tuple[bool, float | None]:
        if texts_key in self.old_ppl:
            self.perplexity[texts_key] = self.old_ppl[texts_key]
            return True, self.old_ppl[texts_key]
        return False, None

    def put_perplexity(self, texts_key: str, value: float | None) -> None:
        self.perplexity[texts_key] = value

    def save(self) -> None:
        """Write what this gate met; a cache that cannot be written costs the next gate time only."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json(self.path, {"pairs": self.pairs, "perplexity": self.perplexity})
            stale = time.time() - STALE_DAYS * 86400
            for other in self.path.parent.glob("*.json"):
                if other.stat().st_mtime < stale:  # a deleted or long-replaced adapter's figures
                    other.unlink(missing_ok=True)
        except OSError:
            pass


def texts_key(texts: list[str]) -> str:
    return hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode()).hexdigest()[:32]
