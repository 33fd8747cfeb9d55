"""How the Embedder cuts texts into batches (index.batch_size, index.batch_tokens): on the CPU a batch
holds at most batch_tokens tokens as padded, so long chunks go a few at a time and short ones many
at a time; on a GPU only batch_size counts; vectors come back in the caller's order either way."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from hashing_embedder import hashed_vector
from vault_agent.config import IndexSettings
from vault_agent.index.embedder import Embedder


class WordModel:
    """A model whose tokens are words; records each batch it is given."""

    def __init__(self, device: str):
        self.device = SimpleNamespace(type=device)
        self.max_seq_length = 256
        self.batches: list[list[str]] = []

    def tokenizer(self, texts, truncation=True, max_length=None):
        return {"input_ids": [text.split()[:max_length] for text in texts]}

    def encode(self, texts, **_):
        self.batches.append(list(texts))
        return np.array([hashed_vector(t) for t in texts])


def embedder_on(device: str, **settings) -> tuple[Embedder, WordModel]:
    embedder = Embedder(IndexSettings(**settings))
    embedder._model = WordModel(device)
    return embedder, embedder._model


TEXTS = [" ".join(f"w{i}" for i in range(n)) for n in (200, 10, 300, 12, 250, 9, 11, 180)]


def test_on_the_cpu_a_batch_holds_at_most_batch_tokens_padded_tokens_and_order_is_kept():
    embedder, model = embedder_on("cpu", batch_size=64, batch_tokens=512)
    vectors = embedder.embed(TEXTS)
    assert vectors == [pytest.approx(hashed_vector(t)) for t in TEXTS]  # the caller's order
    padded = [len(b) * max(min(len(t.split()), 256) for t in b) for b in model.batches]
    assert max(padded) <= 512
    sizes = [len(b) for b in model.batches]
    assert sizes[0] == 2 and sizes[-1] == 4  # the longest two together; the short ones share one batch
    assert sum(sizes) == len(TEXTS)


def test_a_text_longer_than_the_budget_still_gets_a_batch_of_its_own():
    embedder, model = embedder_on("cpu", batch_size=64, batch_tokens=100)
    embedder.embed(TEXTS[:3])
    assert [len(b) for b in model.batches] == [1, 1, 1]


def test_on_a_gpu_batches_are_batch_size_chunks_whatever_their_length():
    embedder, model = embedder_on("cuda", batch_size=3, batch_tokens=100)
    embedder.embed(TEXTS)
    assert [len(b) for b in model.batches] == [3, 3, 2]
