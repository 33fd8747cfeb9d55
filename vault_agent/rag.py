"""Retrieve -> prompt with numbered context -> generate -> answer with citations, recorded.

Every answer is written to the preference log as a response, so later feedback (thumbs,
corrections, comparisons) can refer to it by id.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from .errors import UserError
from .index.search import Hit, search
from .llm.base import ModelStamp
from .llm.prompts import (TEMPLATE_OVERHEAD, build_rag_messages, context_budget, fit_contexts, format_context,
                          parse_citations)
from .llm.stops import StopScanner

# What a chat template adds around each message (role markers, separators), beyond its text.
MESSAGE_OVERHEAD = 8


class PromptTooLong(UserError):
    """400: the messages and the answer's max_tokens can't fit the model's context window."""

    code = "context_length_exceeded"


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
    # how the generation ended, for the OpenAI API: "stop" (the model finished or a stop string
    # came) or "length" (max_tokens reached); not part of /ask's answer
    finish_reason: str = "stop"
    completion_tokens: int = 0  # pieces the model generated (one per token)

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

    def prepare_chat(self, turns: list[dict], k: int | None = None, max_tokens: int | None = None) -> Prepared:
        """A conversation answered from the vault: the last user message is the retrieval query and
        the question; the notes go with it as in prepare(). The client's system messages follow the
        answering rules; earlier turns stay between them, oldest dropped first when the context
        window (after the notes and the answer's max_tokens) is full."""
        start = time.perf_counter()
        system, history, question = split_turns(turns)
        answer_tokens = max_tokens or self.settings.llm.max_tokens
        count = self.backend.count_tokens
        extra_system = "\n\n".join(system)
        budget = context_budget(self.backend.n_ctx, answer_tokens, question, count)
        budget -= count(extra_system) + 2 if extra_system else 0
        if budget < 0:
            raise PromptTooLong(f"the question and max_tokens ({answer_tokens}) need more than the model's "
                                f"context window ({self.backend.n_ctx} tokens); shorten the message or ask for "
                                "fewer tokens")
        index_state = self.indexer.index_state()
        # A chat message may be a pasted page with the question at its end: the search gets the end,
        # within the limit /search and /ask set on a query; the prompt gets all of it.
        query = question[-self.settings.server.max_question_chars:]
        hits = search(self.indexer, query, k or self.settings.llm.context_chunks)
        contexts = [
            {"n": n, "note": h.path, "heading": h.heading, "text": h.text, "hit": h} for n, h in enumerate(hits, 1)
        ]
        contexts = fit_contexts(contexts, budget, count)
        room = budget - sum(count(format_context(c)) + 2 for c in contexts)
        messages = build_rag_messages(question, contexts)
        if extra_system:
            messages[0] = {"role": "system", "content": f"{messages[0]['content']}\n\n{extra_system}"}
        messages[1:1] = newest_turns(history, room, count)
        return Prepared(question, hits, contexts, messages, (time.perf_counter() - start) * 1000, index_state)

    def prepare_plain(self, turns: list[dict], max_tokens: int | None = None) -> Prepared:
        """A conversation answered by the same model and adapter with no retrieval: the client's
        own messages, earlier turns dropped oldest first when they don't fit the context window."""
        system, history, question = split_turns(turns)
        answer_tokens = max_tokens or self.settings.llm.max_tokens
        count = self.backend.count_tokens
        fixed = [{"role": "system", "content": text} for text in system] + [{"role": "user", "content": question}]
        room = self.backend.n_ctx - answer_tokens - TEMPLATE_OVERHEAD - messages_tokens(fixed, count)
        if room < 0:
            raise PromptTooLong(f"the messages and max_tokens ({answer_tokens}) need more than the model's "
                                f"context window ({self.backend.n_ctx} tokens); shorten them or ask for fewer "
                                "tokens")
        messages = fixed[:-1] + newest_turns(history, room, count) + fixed[-1:]
        return Prepared(question, [], [], messages, 0.0, {})

    def stream(
        self, question: str, cancel: threading.Event | None = None, k: int | None = None, **generation
    ) -> Iterator[tuple[str, object]]:
        """('token', text) events, then one ('final', Answer). Nothing is recorded if cancelled."""
        yield from self.generate(self.prepare(question, k), cancel, **generation)

    def generate(
        self, prep: Prepared, cancel: threading.Event | None = None, source: str = "ask",
        stop: Sequence[str] = (), **generation
    ) -> Iterator[tuple[str, object]]:
        """('token', text) events, then one ('final', Answer), recorded. Generation ends early at the
        first of the `stop` strings (not part of the answer)."""
        started = time.perf_counter()
        first_token_ms = None
        pieces: list[str] = []
        generated = 0
        scanner = StopScanner(stop)
        stamp = ModelStamp()  # filled under the generation lock: the adapter may swap between requests
        # closing(): when a stop string ends the answer early, the model's generator (and its lock)
        # is released now, not whenever it is garbage-collected
        with contextlib.closing(self.backend.stream_chat(prep.messages, cancel=cancel, stamp=stamp,
                                                         **generation)) as model_pieces:
            for piece in model_pieces:
                generated += 1
                if first_token_ms is None:
                    first_token_ms = (time.perf_counter() - started) * 1000
                if (piece := scanner.feed(piece)):
                    pieces.append(piece)
                    yield "token", piece
                if scanner.stopped:
                    break
        if cancel is not None and cancel.is_set():
            return
        if (tail := scanner.flush()):
            pieces.append(tail)
            yield "token", tail
        generation_ms = (time.perf_counter() - started) * 1000
        text = "".join(pieces).strip()
        limit = generation.get("max_tokens") or self.settings.llm.max_tokens
        finish_reason = "length" if not scanner.stopped and generated >= limit else "stop"
        timings = {
            "retrieval_ms": round(prep.retrieval_ms, 1),
            "first_token_ms": round(first_token_ms or generation_ms, 1),
            "generation_ms": round(generation_ms, 1),
            "tokens": self.backend.count_tokens(text) if text else 0,
        }
        answer = self._record(prep, text, timings, source, stamp)
        answer.finish_reason, answer.completion_tokens = finish_reason, generated
        yield "final", answer

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


def split_turns(turns: list[dict]) -> tuple[list[str], list[dict], str]:
    """(system texts, earlier user/assistant turns, the last user message) from a chat's messages."""
    if not turns or turns[-1]["role"] != "user":
        raise UserError("the last message must be the user's (the question to answer)")
    system = [t["content"] for t in turns[:-1] if t["role"] == "system" and t["content"].strip()]
    history = [{"role": t["role"], "content": t["content"]} for t in turns[:-1] if t["role"] != "system"]
    question = turns[-1]["content"].strip()
    if not question:
        raise UserError("the last user message is blank")
    return system, history, question


def messages_tokens(messages: list[dict], count_tokens) -> int:
    return sum(count_tokens(m["content"]) + MESSAGE_OVERHEAD for m in messages)


def newest_turns(history: list[dict], room: int, count_tokens) -> list[dict]:
    """The most recent turns that fit `room` tokens, in their order (the oldest are dropped)."""
    kept: list[dict] = []
    for turn in reversed(history):
        cost = messages_tokens([turn], count_tokens)
        if cost > room:
            break
        kept.append(turn)
        room -= cost
    return kept[::-1]


def final_answer(events: Iterator[tuple[str, object]]) -> Answer:
    final = None
    for kind, value in events:
        if kind == "final":
            final = value
    if final is None:
        raise RuntimeError("generation ended without an answer")
    return final
