"""`vault-agent eval`: answer a fixed question file with one or more adapters and score the answers.

Question file: JSON Lines, one object per line:
    {"question": "...", "expected_notes": ["Folder/Note.md"], "facts": [["alt", "alt"], ...]}
A fact group counts as covered when any of its alternatives appears in the answer (case-insensitive).

The metric functions are pure; `run_eval` drives the real index and model. Eval answers are never
written to the preference log (they would land in the rating queue): RagService gets a log that
discards them.
"""

from __future__ import annotations

import itertools
import json
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError

RECALL_K = 5


@dataclass
class Question:
    question: str
    expected_notes: list[str] = field(default_factory=list)
    facts: list[list[str]] = field(default_factory=list)
    line: int = 0


# --- the question file -------------------------------------------------------------------------

def _bad(path: Path, line: int, why: str) -> UserError:
    return UserError(f"{path} line {line}: {why}")


def _strings(value, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"{what} must be a list of non-empty strings")
    return [v.strip() for v in value]


def parse_question(obj, path: Path, line: int) -> Question:
    if not isinstance(obj, dict):
        raise _bad(path, line, f"expected a JSON object, got {type(obj).__name__}")
    text = obj.get("question")
    if not isinstance(text, str) or not text.strip():
        raise _bad(path, line, '"question" must be a non-empty string')
    try:
        expected = _strings(obj.get("expected_notes", []), '"expected_notes"')
        raw_facts = obj.get("facts", [])
        if not isinstance(raw_facts, list):
            raise ValueError('"facts" must be a list of lists of alternatives, e.g. [["42", "forty-two"]]')
        # a bare string is a fact with one spelling: ["42"] means [["42"]]
        facts = [_strings([g] if isinstance(g, str) else g, f'"facts" group {n}') for n, g in enumerate(raw_facts, 1)]
        if any(not g for g in facts):
            raise ValueError('"facts" has an empty group; give at least one alternative')
    except ValueError as e:
        raise _bad(path, line, str(e)) from None
    return Question(text.strip(), expected, facts, line)


def load_questions(path: Path) -> list[Question]:
    """Every question in the file; a bad line is a UserError naming it. Blank lines are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserError(f"question file {path} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read question file {path}: {e}") from None
    questions = []
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise _bad(path, n, f"not valid JSON ({e.msg} at column {e.colno})") from None
        questions.append(parse_question(obj, path, n))
    if not questions:
        raise UserError(f"question file {path} has no questions")
    return questions


# --- metrics (pure) ----------------------------------------------------------------------------

def distinct_notes(paths: Sequence[str]) -> list[str]:
    """Note paths in rank order, each once (several chunks of one note count as one result)."""
    return list(dict.fromkeys(paths))


def recall_at_k(retrieved: Sequence[str], expected: Sequence[str], k: int = RECALL_K) -> float | None:
    """Share of the expected notes among the first k distinct retrieved notes; None without any."""
    if not expected:
        return None
    top = set(distinct_notes(retrieved)[:k])
    return sum(1 for e in set(expected) if e in top) / len(set(expected))


def _normalise(text: str) -> str:
    # markdown emphasis and code marks sit between words the model copies from notes ("**42** cloves")
    return " ".join(re.sub(r"[*`_]", "", text).split()).casefold()


def _pattern(alternative: str) -> re.Pattern:
    alt = _normalise(alternative)
    # a number must not match inside a longer number: "7" is not found in "17" or "7.5"
    start = r"(?<![\d.])" if alt[:1].isdigit() else ""
    end = r"(?![\d]|\.\d)" if alt[-1:].isdigit() else ""
    return re.compile(start + re.escape(alt) + end)


def facts_found(answer: str, facts: Sequence[Sequence[str]]) -> list[bool]:
    """For each fact group: does any alternative appear in the answer (case-insensitive)?"""
    text = _normalise(answer)
    return [any(_pattern(alt).search(text) for alt in group) for group in facts]


def fact_coverage(answer: str, facts: Sequence[Sequence[str]]) -> float | None:
    found = facts_found(answer, facts)
    return sum(found) / len(found) if found else None


def cites_explicitly(citations: Sequence[dict]) -> bool:
    """The answer named its sources by [n] (RagService marks fallback citations explicit=False)."""
    return bool(citations) and all(c.get("explicit") for c in citations)


def word_count(text: str) -> int:
    return len(text.split())


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.fmean(present), 3) if present else None


def summarize(rows: Sequence[dict]) -> dict:
    """Per-adapter figures over per-question rows (as made by `score_answer`)."""
    latencies = [r["latency_ms"] for r in rows]
    return {
        "questions": len(rows),
        "fact_coverage": _mean([r["fact_coverage"] for r in rows]),
        "explicit_citation_rate": _mean([1.0 if r["explicit_citation"] else 0.0 for r in rows]),
        "mean_words": _mean([r["words"] for r in rows]),
        "mean_tokens": _mean([r["tokens"] for r in rows]),
        "latency_ms_mean": _mean(latencies),
        "latency_ms_p50": round(statistics.median(latencies), 1) if latencies else None,
    }


def score_answer(question: Question, answer: str, citations: list[dict], tokens: int, latency_ms: float) -> dict:
    found = facts_found(answer, question.facts)
    return {
        "answer": answer,
        "fact_coverage": sum(found) / len(found) if found else None,
        "facts_found": [group[0] for group, ok in zip(question.facts, found) if ok],
        "facts_missing": [group[0] for group, ok in zip(question.facts, found) if not ok],
        "explicit_citation": cites_explicitly(citations),
        "cited_notes": distinct_notes([c["path"] for c in citations]),
        "words": word_count(answer),
        "tokens": tokens,
        "latency_ms": round(latency_ms, 1),
    }


# --- adapters ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class AdapterChoice:
    label: str  # as shown in the table: "none", "v0003", "active (v0003)"
    version: str | None
    path: Path | None


def resolve_adapter(spec: str, dirs) -> AdapterChoice:
    """'none', 'active' (the saved choice, possibly none) or a version name -> what to load."""
    from .train import active

    if spec == "none":
        return AdapterChoice("none", None, None)
    if spec == "active":
        state, warning = active.read_state(dirs)
        if warning:
            raise UserError(warning)
        if state.active is None:
            return AdapterChoice("active (none)", None, None)
        return AdapterChoice(f"active ({state.active})", state.active, active.require_servable(dirs, state.active))
    return AdapterChoice(spec, spec, active.require_servable(dirs, spec))


# --- running -----------------------------------------------------------------------------------

class DiscardLog:
    """Stands in for the preference log: eval answers must not reach the rating queue."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)

    def record_response(self, **_fields) -> str:
        return f"eval-{next(self._ids)}"


def run_eval(indexer, backend, settings, questions: Sequence[Question], adapters: Sequence[AdapterChoice],
             progress: Callable[[int, int], None] | None = None) -> dict:
    """Answer every question with every adapter at temperature 0 and a fixed seed.

    Retrieval does not depend on the adapter, so each question is retrieved once and the same
    prompt goes to every adapter: differences in the table come from the adapter alone."""
    from .index.search import search
    from .rag import RagService, final_answer

    rag = RagService(indexer, backend, DiscardLog(), settings)
    known = set(indexer.catalog.note_stats())
    missing = sorted({n for q in questions for n in q.expected_notes if n not in known})
    prepared, per_question = [], []
    for q in questions:
        # ask for more chunks than k: several may come from one note, and recall counts notes
        hits = search(indexer, q.question, RECALL_K * max(1, settings.search.per_note))
        retrieved = distinct_notes([h.path for h in hits])[:RECALL_K]
        prepared.append(rag.prepare(q.question))
        per_question.append({
            "line": q.line, "question": q.question, "expected_notes": q.expected_notes,
            "retrieved_notes": retrieved, "recall_at_5": recall_at_k(retrieved, q.expected_notes),
            "answers": {},
        })
    total, done = len(questions) * len(adapters), 0
    summaries = {}
    for choice in adapters:
        backend.set_adapter(choice.path, choice.version)
        rows = []
        for q, prep, out in zip(questions, prepared, per_question):
            answer = final_answer(rag.generate(prep, source="ask", temperature=0.0, seed=settings.llm.seed))
            latency = answer.timings["generation_ms"] + answer.timings["retrieval_ms"]
            row = score_answer(q, answer.answer, answer.citations, answer.timings["tokens"], latency)
            row["adapter_version"] = answer.adapter_version  # stamped under the generation lock
            out["answers"][choice.label] = row
            rows.append(row)
            done += 1
            if progress:
                progress(done, total)
        summaries[choice.label] = summarize(rows)
    recall = _mean([r["recall_at_5"] for r in per_question])
    for summary in summaries.values():
        summary["recall_at_5"] = recall
    return {
        "model": backend.model_id,
        "adapters": [c.label for c in adapters],
        "summary": summaries,
        "questions": per_question,
        "warnings": [f"expected note not in the index: {n}" for n in missing],
    }


TABLE_ROWS = [  # (key, label, format)
    ("recall_at_5", "retrieval recall@5", "{:.2f}"),
    ("fact_coverage", "fact coverage", "{:.2f}"),
    ("explicit_citation_rate", "explicit citations", "{:.2f}"),
    ("mean_words", "answer words (mean)", "{:.0f}"),
    ("mean_tokens", "answer tokens (mean)", "{:.0f}"),
    ("latency_ms_mean", "latency ms (mean)", "{:.0f}"),
    ("latency_ms_p50", "latency ms (p50)", "{:.0f}"),
]


def table_rows(report: dict) -> list[list[str]]:
    """The summary as text rows: one per metric, one column per adapter."""
    out = []
    for key, label, fmt in TABLE_ROWS:
        cells = []
        for adapter in report["adapters"]:
            value = report["summary"][adapter][key]
            cells.append("n/a" if value is None else fmt.format(value))
        out.append([label, *cells])
    return out
