"""Retrieve -> prompt with numbered context -> generate -> answer with citations, recorded.

Every answer is written to the preference log as a response, so later feedback (thumbs,
corrections, comparisons) can refer to it by id.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from .index.search import Hit, search
from .llm.base import ModelStamp
from .llm.prompts import build_rag_messages, context_budget, fit_contexts, parse_citations


@dataclass
class Prepared:
    question: str
    hits: list[Hit]
    contexts: list[dict]
    messages: list[dict]
    retrieval_ms: float
    index_state: dict = field(default_factory=dict)  # syncing/ready, notes indexed/total, at retrieval


@dataclass
class Answer:
    response_id: str
    question: str
    answer: str
    citations: list[dict]
    model: str
    adapter_version: str | None
    timings: dict = field(default_factory=dict)
    index_state: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "response_id": self.response_id,
            "question": self.question,
            "answer": self.answer,
            "citations": self.citations,
            "model": self.model,
            "adapter_version": self.adapter_version,
            "timings": self.timings,
            "index_state": self.index_state,
        }


class RagService:
    def __init__(self, indexer, backend, log, settings, version_pair=None):
        self.indexer = indexer
        self.backend = backend
        self.log = log
        self.settings = settings
        # () -> ((path, version) of the active adapter, (path, version) of the one before) or None;
        # the daemon wires it to the adapter registry
        self.version_pair = version_pair

    @property
    def vault_name(self) -> str:
        return self.indexer.vault.name

    def prepare(self, question: str, k: int | None = None) -> Prepared:
        start = time.perf_counter()
        index_state = self.indexer.index_state()  # before searching: what the hits could draw on
        hits = search(self.indexer, question, k or self.settings.llm.context_chunks)
        contexts = [
            {"n": n, "note": h.path, "heading": h.heading, "text": h.text, "hit": h} for n, h in enumerate(hits, 1)
        ]
        llm = self.settings.llm
        budget = context_budget(self.backend.n_ctx, llm.max_tokens, question, self.backend.count_tokens)
        contexts = fit_contexts(contexts, budget, self.backend.count_tokens)
        messages = build_rag_messages(question, contexts)
        return Prepared(question, hits, contexts, messages, (time.perf_counter() - start) * 1000, index_state)

    def stream(
        self, question: str, cancel: threading.Event | None = None, k: int | None = None, **generation
    ) -> Iterator[tuple[str, object]]:
        """('token', text) events, then one ('final', Answer). Nothing is recorded if cancelled."""
        yield from self.generate(self.prepare(question, k), cancel, **generation)

    def generate(
        self, prep: Prepared, cancel: threading.Event | None = None, source: str = "ask", **generation
    ) -> Iterator[tuple[str, object]]:
        started = time.perf_counter()
        first_token_ms = None
        pieces: list[str] = []
        stamp = ModelStamp()  # filled under the generation lock: the adapter may swap between requests
        for piece in self.backend.stream_chat(prep.messages, cancel=cancel, stamp=stamp, **generation):
            if first_token_ms is None:
                first_token_ms = (time.perf_counter() - started) * 1000
            pieces.append(piece)
            yield "token", piece
        if cancel is not None and cancel.is_set():
            return
        generation_ms = (time.perf_counter() - started) * 1000
        text = "".join(pieces).strip()
        timings = {
            "retrieval_ms": round(prep.retrieval_ms, 1),
            "first_token_ms": round(first_token_ms or generation_ms, 1),
            "generation_ms": round(generation_ms, 1),
            "tokens": self.backend.count_tokens(text) if text else 0,
        }
        yield "final", self._record(prep, text, timings, source, stamp)

    def ask(self, question: str, k: int | None = None) -> Answer:
        return final_answer(self.stream(question, k=k))

    def compare(self, question: str, k: int | None = None, attempts: int = 4) -> tuple[Answer, Answer]:
        """Two candidate answers to one prompt. Once adapter versions exist, the active adapter
        against the one before it (or the base), in random order, so the user's choices judge each
        promotion; otherwise two samples that differ by seed (a few seeds are tried until they do)."""
        prep = self.prepare(question, k)
        versions = self.version_pair() if self.version_pair is not None else None
        if versions is not None:
            first, second = versions if random.random() < 0.5 else versions[::-1]  # no position bias
            a = final_answer(self.generate(prep, source="compare", adapter=first))
            b = final_answer(self.generate(prep, source="compare", adapter=second))
            return a, b
        temperature = max(self.settings.llm.temperature, 0.8)
        base = self.settings.llm.seed
        a = final_answer(self.generate(prep, source="compare", temperature=temperature, seed=base + 1))
        for attempt in range(attempts):
            b = final_answer(self.generate(prep, source="compare", temperature=temperature, seed=base + 2 + attempt))
            if b.answer != a.answer:
                break
        return a, b

    def citations(self, prep: Prepared, answer: str) -> list[dict]:
        """Contexts the answer cites by [n]; if it cites none, every context it was given (explicit=False)."""
        cited = parse_citations(answer, len(prep.contexts))
        chosen = [prep.contexts[n - 1] for n in cited] if cited else prep.contexts
        out = []
        for ctx in chosen:
            hit: Hit = ctx["hit"]
            out.append({
                "n": ctx["n"],
                "path": hit.path,
                "heading": hit.heading,
                "link": hit.link,
                "uri": hit.obsidian_uri(self.vault_name),
                "snippet": hit.snippet(),
                "explicit": bool(cited),
            })
        return out

    def _record(self, prep: Prepared, text: str, timings: dict, source: str, stamp: ModelStamp) -> Answer:
        citations = self.citations(prep, text)
        response_id = self.log.record_response(
            question=prep.question,
            prompt=prep.messages[-1]["content"],
            messages=prep.messages,
            answer=text,
            retrieved=[c["hit"].chunk_id for c in prep.contexts],
            citations=citations,
            model_id=stamp.model_id,
            adapter_version=stamp.adapter_version,
            # the log keeps the index state with the timings: both describe how the answer was made
            timings={**timings, "index_state": prep.index_state},
            source=source,
        )
        return Answer(response_id, prep.question, text, citations, stamp.model_id, stamp.adapter_version,
                      timings, prep.index_state)


def final_answer(events: Iterator[tuple[str, object]]) -> Answer:
    final = None
    for kind, value in events:
        if kind == "final":
            final = value
    if final is None:
        raise RuntimeError("generation ended without an answer")
    return final
