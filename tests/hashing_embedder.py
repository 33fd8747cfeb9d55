"""A tiny deterministic embedder for tests that are not about the embedding model: each word and its
character trigrams are hashed into a fixed-size vector, so texts sharing words (or word stems:
"lighthouse" / "lighthouses") land close together. No torch, no model file: it "loads" in no time.

It has the surface the indexer, the search and the daemon use of the real `Embedder`."""

from __future__ import annotations

import contextlib
import hashlib
import math
import re
from types import SimpleNamespace
from typing import Callable

from vault_agent.index.embedder import Cancelled

DIMENSION = 256
WORD = re.compile(r"\w+")
NO_TOKENIZER_MODEL = SimpleNamespace(device=SimpleNamespace(type="cpu"))  # search finds no vocabulary


def _bucket(feature: str) -> tuple[int, float]:
    """A stable (index, sign) for a feature (Python's own hash() changes between runs)."""
    digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    return value % DIMENSION, 1.0 if value >> 63 else -1.0


def hashed_vector(text: str) -> list[float]:
    vec = [0.0] * DIMENSION
    for word in WORD.findall(text.lower()):
        features = [f"w:{word}"] * 2  # the whole word counts more than any one of its trigrams
        padded = f"<{word}>"
        features += [f"t:{padded[i:i + 3]}" for i in range(len(padded) - 2)]
        for feature in features:
            index, sign = _bucket(feature)
            vec[index] += sign
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


class HashingEmbedder:
    """Stands in for vault_agent.index.embedder.Embedder (same attributes and methods)."""

    spec = "test:hashing"
    label = "hashing-test-embedder"
    identity = "test:hashing-v1"
    device = "cpu"
    dimension = DIMENSION

    def __init__(self, batch_size: int = 64):
        self.batch_size = batch_size
        self.embedded_count = 0
        self.cpu_share = None  # set by the daemon, as for the real one: batches wait for answers

    @property
    def model(self):
        return NO_TOKENIZER_MODEL

    def embed(self, texts: list[str], should_stop: Callable[[], bool] | None = None) -> list[list[float]]:
        out: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            if should_stop is not None and should_stop():
                raise Cancelled()
            share = self.cpu_share
            turn = share.embedding(1, should_stop) if share is not None else contextlib.nullcontext()
            with turn:
                out += [hashed_vector(t) for t in texts[start:start + self.batch_size]]
        self.embedded_count += len(texts)
        return out

    def embed_query(self, text: str) -> list[float]:
        return hashed_vector(text)
