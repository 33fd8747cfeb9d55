"""The gate's answer-level check: does a candidate adapter answer unseen questions at least as well
as the active one?

Held-out synthetic pairs already hold a question the training never saw, the RAG prompt it was
asked with (the notes retrieval found, as served) and the chunk it was made from. Each becomes a
probe; llama.cpp answers it through the serving backend under each adapter (greedy, so the only
difference is the weights), and the answer is scored the way `vault-agent eval` scores one:
the share of the source chunk's key terms it contains (`evaluate.fact_coverage`), and whether it
cites the source note by its [n]. A candidate may not lower either beyond noise: the 95% paired
bootstrap interval of (candidate - active) must not lie wholly below 0.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import evaluate
from ..llm.prompts import note_title, parse_citations
from . import evidence

ANSWER_TOKENS = 160  # as synthetic pairs' answers: the probes ask the same kind of question
KEY_TERMS = 8
_QUESTION = re.compile(r"\n\nQuestion: (.+)\s*\Z", re.S)
_HEADER = re.compile(r"^\[(\d+)\] (.+)$", re.M)
_TERM = re.compile(r"\d+(?:[.,:/-]\d+)*%?|[^\W\d_][\w'-]*[\w]", re.UNICODE)
# Words too common to show that an answer used the note; short words are skipped anyway.
_STOP = frozenset("""about above after again against also although always among another anything because been
before being below between both could does doing down during each either else even every from further
have having here however into itself just last later less like made make many might more most much must
never next note notes only other ours over same should since some such than that their them then there
these they this those through thus under until upon very want well were what when where which while whom
whose will with within without would your yours first second often usually everything something anything
nothing whatever everyone someone""".split())


@dataclass(frozen=True)
class Probe:
    """One unseen question: the served RAG prompt, its source note and the terms a good answer uses."""

    pair_id: str
    question: str
    messages: list[dict]
    source_note: str
    source_ns: list[int]  # the [n] of every block from the source note in the prompt (empty: none made it)
    terms: list[str]


def key_terms(text: str, question: str, k: int = KEY_TERMS) -> list[str]:
    """The words an answer drawn from `text` would carry and one made up would not: numbers and
    names first, then long words, in the note's order; none the question already gives away."""
    from .keep_rules import plain_prose

    prose = plain_prose(text)
    asked = {w.casefold() for w in _TERM.findall(question)}
    seen: dict[str, tuple[int, int, str]] = {}
    for m in _TERM.finditer(prose):
        word, key = m.group(0), m.group(0).casefold()
        if key in asked or key in seen or key in _STOP or "'" in word:
            continue
        if word[0].isdigit() or any(c.isdigit() for c in word):
            if len(word) < 2:
                continue  # a lone digit turns up in any answer
            rank = 0
        elif word[0].isupper() and not _sentence_start(prose, m.start()):
            rank = 1  # a name: capitalised mid-sentence
        elif len(word) >= 7:
            rank = 2
        else:
            continue  # a short common word proves little
        seen[key] = (rank, m.start(), word)
    picked = sorted(seen.values())[:k]
    return [w for _, _, w in sorted(picked, key=lambda t: t[1])]


def _sentence_start(text: str, at: int) -> bool:
    before = text[:at].rstrip()
    return not before or before[-1] in ".!?:;\n"


def question_of(messages: list[dict]) -> str | None:
    """The question asked in a RAG prompt (build_rag_messages puts it last in the user message)."""
    users = [m["content"] for m in messages if m.get("role") == "user"]
    match = _QUESTION.search(users[-1]) if users else None
    return match.group(1).strip() if match else None


def source_numbers(messages: list[dict], note: str) -> list[int]:
    """The [n] of every block of `note` in a RAG prompt, from their headers (prompts.context_header)."""
    title = note_title(note)
    return [int(m.group(1)) for m in _HEADER.finditer(messages[-1]["content"] if messages else "")
            if m.group(2) == title or m.group(2).startswith(f"{title} > ")]


def probes_from_pairs(pairs: list, chunks: dict[str, Any], limit: int) -> list[Probe]:
    """Probes from held-out synthetic pairs whose source chunk is still in the index catalog, one per
    pair. `pairs`: dataset.Pair, or examples.Example (a KTO version's held-out side, where both
    halves of a pair carry its id and chunk); `chunks`: chunk id -> catalog.ChunkRow."""
    out: list[Probe] = []
    asked: set[str] = set()
    for pair in pairs:
        pair_id = getattr(pair, "group", pair.id)  # an Example's group is its pair's id
        if pair.chunk_id is None or pair_id in asked or len(out) >= limit:
            continue
        chunk = chunks.get(pair.chunk_id)
        question = question_of(pair.prompt)
        if chunk is None or question is None:
            continue
        terms = key_terms(chunk.text, question)
        if terms:
            asked.add(pair_id)
            out.append(Probe(pair_id, question, pair.prompt, chunk.path,
                             source_numbers(pair.prompt, chunk.path), terms))
    return out


def catalog_chunks(index_dir: Path, ids: list[str]) -> dict[str, Any]:
    """The index catalog's rows for these chunk ids, read-only (a daemon may own the index)."""
    from ..index.catalog import Catalog

    path = index_dir / "catalog.sqlite"
    if not path.is_file() or not ids:
        return {}
    try:
        catalog = Catalog(path, readonly=True)
        try:
            return catalog.chunks_by_id(ids)
        finally:
            catalog.close()
    except sqlite3.Error:  # caught mid-write by the daemon that owns it: no probes this time
        return {}


@dataclass
class AnswerScores:
    """One adapter's answers to the probes, scored."""

    adapter: str | None
    coverage: list[float] = field(default_factory=list)
    cited: list[float] = field(default_factory=list)  # 1.0: the answer cites a block of the source note by [n]
    answers: list[str] = field(default_factory=list, repr=False)

    def figures(self) -> dict:
        mean = lambda xs: round(sum(xs) / len(xs), 3) if xs else None  # noqa: E731
        return {"adapter": self.adapter, "questions": len(self.coverage), "fact_coverage": mean(self.coverage),
                "cites_source": mean(self.cited)}


def score_answers(probes: list[Probe], answers: list[str], adapter: str | None) -> AnswerScores:
    out = AnswerScores(adapter)
    for probe, answer in zip(probes, answers):
        out.answers.append(answer)
        out.coverage.append(evaluate.fact_coverage(answer, [[t] for t in probe.terms]) or 0.0)
        n_contexts = len(_HEADER.findall(probe.messages[-1]["content"]))
        out.cited.append(float(bool(set(probe.source_ns) & set(parse_citations(answer, n_contexts)))))
    return out


def answer_probes(llm_settings, adapters: list[tuple[str | None, Path | None]], probes: list[Probe],
                  max_tokens: int = ANSWER_TOKENS) -> list[AnswerScores]:
    """Each adapter's answers (label, GGUF LoRA or None for the base) from the serving backend with
    greedy decoding, so two adapters differ only by their weights. A probe that does not fit the
    context window now (llm.n_ctx may have changed since its pair was made) is left out for all."""
    from ..errors import UserError
    from ..llm.backend import LlamaBackend

    answers: list[list[str | None]] = []
    # served as the daemon serves them (llm.adapter_serving): on a small CPU model the gate has just
    # built the candidate's merged copy, and the incumbent's is the one being served
    with LlamaBackend(llm_settings) as backend:
        for label, path in adapters:
            backend.set_adapter(path, label)
            mine: list[str | None] = []
            for p in probes:
                try:
                    mine.append(backend.chat(p.messages, max_tokens=max_tokens, temperature=0.0, seed=0))
                except UserError:
                    mine.append(None)
            answers.append(mine)
    keep = [i for i in range(len(probes)) if all(a[i] is not None for a in answers)]
    return [score_answers([probes[i] for i in keep], [a[i] for i in keep], label)
            for (label, _), a in zip(adapters, answers)]


@dataclass
class AnswerCheck:
    """The candidate's answers against the active adapter's: the figures, and why it falls short."""

    candidate: AnswerScores
    active: AnswerScores
    coverage_change: evidence.Interval
    citation_change: evidence.Interval
    shortfalls: list[str]

    def to_dict(self) -> dict:
        return {"candidate": self.candidate.figures(), "active": self.active.figures(),
                "coverage_change": self.coverage_change.to_dict(), "citation_change": self.citation_change.to_dict(),
                "probes": len(self.candidate.coverage)}

    def line(self) -> str:
        c, a = self.candidate.figures(), self.active.figures()
        return (f"answers to {c['questions']} unseen questions: key facts {a['fact_coverage']:.2f} -> "
                f"{c['fact_coverage']:.2f} (change {self.coverage_change}), cites the source note "
                f"{a['cites_source']:.2f} -> {c['cites_source']:.2f} (change {self.citation_change})")


def compare(candidate: AnswerScores, active: AnswerScores) -> AnswerCheck:
    """A candidate may not lower fact coverage or citing beyond noise (interval wholly below 0)."""
    coverage = evidence.paired_interval(candidate.coverage, active.coverage)
    citation = evidence.paired_interval(candidate.cited, active.cited)
    shortfalls = []
    if coverage.high < 0:
        shortfalls.append(f"its answers to unseen questions carry fewer of the notes' key facts ({coverage})")
    if citation.high < 0:
        shortfalls.append(f"its answers to unseen questions cite the source note less often ({citation})")
    return AnswerCheck(candidate, active, coverage, citation, shortfalls)


def probe_record(probe: Probe) -> dict:
    """A probe as gate.json lists it (without the prompt)."""
    return {k: v for k, v in asdict(probe).items() if k != "messages"}
