"""First tokens first under indexing (issue 22): an answer counts from the moment its request
arrives, so the indexer pauses between batches before the question's retrieval, and while
questions are coming in it takes small batches (an in-flight batch cannot be interrupted).

Through the real daemon (HTTP, request queue, CPU share, indexer, the real Embedder's batching
loop) with the fake chat backend and a stand-in embedding model that holds "the CPU" (a lock the
fake generation also needs) for 20 ms per chunk."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from conftest import start_daemon, wait_until
from hashing_embedder import hashed_vector
from vault_agent.config import IndexSettings
from vault_agent.index.embedder import SMALL_BATCH, Embedder

PER_CHUNK_S = 0.02


class BusyModel:
    """Stands in for the sentence-transformers model: embeds with the hashing vectors, holding the
    CPU lock for `per_chunk_s` per text, and records every batch (start time, size)."""

    device = SimpleNamespace(type="cpu")
    threads = 1

    def __init__(self, cpu: threading.Lock):
        self.cpu = cpu
        self.per_chunk_s = 0.0  # the start-up index runs at full speed; the test sets PER_CHUNK_S
        self.batches: list[tuple[float, int]] = []

    def encode(self, texts, **_):
        import numpy as np

        with self.cpu:
            self.batches.append((time.monotonic(), len(texts)))
            time.sleep(self.per_chunk_s * len(texts))
            return np.array([hashed_vector(t) for t in texts])

    def get_embedding_dimension(self) -> int:
        return len(hashed_vector("x"))


class TimedEmbedder(Embedder):
    """The real Embedder (its batching and CPU-share turns) on the BusyModel; notes when each
    embed() call ends."""

    def __init__(self, model: BusyModel):
        super().__init__(IndexSettings(batch_size=64))
        self._identity = "test:busy-model"  # settled: nothing to export
        self._model = model
        self.calls: list[tuple[int, float]] = []  # (texts, end time)

    def embed(self, texts, should_stop=None):
        out = super().embed(texts, should_stop)
        self.calls.append((len(texts), time.monotonic()))
        return out

    def embed_query(self, text):
        return hashed_vector(text)


def test_a_question_gets_its_first_token_before_a_big_indexing_call_ends(tmp_path, sample_vault_copy):
    from vault_agent.llm.fake import FakeBackend

    cpu = threading.Lock()
    batches_before = 0
    model = BusyModel(cpu)
    embedder = TimedEmbedder(model)
    backend = FakeBackend(token_delay_s=0.02)
    backend.max_tokens = 24

    def generation_needs_the_cpu(_messages):  # like llama.cpp: it cannot run beside a batch
        with cpu:
            pass

    backend.before_generation = generation_needs_the_cpu
    running = start_daemon(sample_vault_copy, tmp_path / "home", embedder, backend,
                           server={"port": 0}, index={"debounce_seconds": 0.5})
    try:
        # no question yet since the start: batches are full size
        calls_before, batches_before = len(embedder.calls), len(model.batches)
        model.per_chunk_s = PER_CHUNK_S
        body = "\n\n".join(f"Paragraph {i} about river barges and their cargo, tides and locks. " * 6
                           for i in range(8))
        for n in range(40):  # ~200 chunks: one embed() call of several full batches
            (sample_vault_copy / f"Barges {n}.md").write_text(f"# Barges {n}\n\n{body}\n", encoding="utf-8")
        wait_until(lambda: len(model.batches) > batches_before, timeout=30, what="indexing to start")

        asked = time.monotonic()
        first = final = None
        with running.http.stream("POST", "/ask/stream", json={"question": "What do barges carry?"}) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("event: token") and first is None:
                    first = time.monotonic()
                if line.startswith("event: final"):
                    final = time.monotonic()
        assert first is not None and final is not None
        wait_until(lambda: any(end > asked for _, end in embedder.calls[calls_before:]), timeout=120,
                   what="the big indexing call to end")
    finally:
        running.stop()

    texts, call_end = min((c for c in embedder.calls[calls_before:] if c[1] > asked), key=lambda c: c[1])
    assert texts >= 150  # the 40 notes in one call (the watcher's debounce gathers them)
    assert first < call_end - 1.0  # the question did not wait for the rest of the call (>= 3 s of batches)
    # at most the batch in flight when it arrived ran beside it: no batch started while it was answered
    # (the request leaves the queue as its last event is sent: the next batch may start just before
    # the client reads it)
    started_during = [t for t, _ in model.batches if asked + 0.05 < t < final - 0.1]
    assert started_during == []
    # while questions come in, the indexer takes small batches: the rest of the call is quick to yield
    later = [size for t, size in model.batches if t > final]
    assert later and max(later) <= SMALL_BATCH
    full = [size for t, size in model.batches[batches_before:] if t < asked]
    assert full and max(full) == 64  # and full-size batches before any question


def test_notes_are_not_read_or_parsed_while_an_answer_is_generated(tmp_path, sample_vault_copy, monkeypatch):
    """Reading and parsing a note is Python work on a core (and the GIL) beside the decode threads:
    notes that arrive while an answer streams are parsed after its last token, then indexed."""
    import vault_agent.index.indexer as indexer_module
    from hashing_embedder import HashingEmbedder
    from vault_agent.llm.fake import FakeBackend

    parsed: list[tuple[str, float]] = []
    real_parse = indexer_module.parse_note

    def timed_parse(rel, *args, **kwargs):
        parsed.append((rel, time.monotonic()))
        return real_parse(rel, *args, **kwargs)

    monkeypatch.setattr(indexer_module, "parse_note", timed_parse)
    backend = FakeBackend(token_delay_s=0.1)
    backend.max_tokens = 40  # ~4 s of answer
    running = start_daemon(sample_vault_copy, tmp_path / "home", HashingEmbedder(), backend,
                           server={"port": 0}, index={"debounce_seconds": 0.2})
    try:
        final = None
        with running.http.stream("POST", "/ask/stream", json={"question": "What do barges carry?"}) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("event: token") and not (sample_vault_copy / "Barges 0.md").exists():
                    for n in range(5):
                        (sample_vault_copy / f"Barges {n}.md").write_text(f"# Barges {n}\n\nCoal and grain.\n")
                    written = time.monotonic()
                if line.startswith("event: final"):
                    final = time.monotonic()
        assert final is not None and final - written > 2.0  # the sync had time to start during the answer
        wait_until(lambda: len([p for p, _ in parsed if p.startswith("Barges")]) == 5, timeout=30,
                   what="the new notes to be parsed")
        wait_until(lambda: any(h["path"].startswith("Barges") for h in running.http.post(
            "/search", json={"query": "coal grain barges", "k": 10}).json()["hits"]), timeout=30,
            what="the new notes to be searchable")
    finally:
        running.stop()
    barges = [t for p, t in parsed if p.startswith("Barges")]
    assert min(barges) > final - 0.15  # none before the answer's end (the last event leaves as it ends)
