"""Synthetic preference pairs from the vault itself: the serving model's answer WITH retrieved
notes (chosen) against its answer to the same question WITHOUT them (rejected).

The steps are plain functions of a `generate(messages, max_tokens) -> str` callable and a
`retrieve(question) -> contexts` callable, so the CLI (in-process model) and the daemon (its own
model, behind its generation gate) share every rule here.

A pair's origin_id is "<chunk id>:<chunk content hash>": a re-run skips chunks already done,
an interrupted run resumes where it stopped, and an edited chunk (new hash) gets a fresh pair.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..llm.prompts import build_plain_messages, build_rag_messages, fit_contexts, note_title, parse_citations
from .keep_rules import CODE_FENCE, CONTENT_WORD, KeepRules, clean_markup, content_words, grounded_answer, source_overlap

Generate = Callable[[list[dict], int], str]
Retrieve = Callable[[str], list[dict]]

MIN_CHUNK_CHARS = 120  # fewer characters of prose than this: nothing worth asking about
ANSWER_TOKENS = 160
QUESTION_TOKENS = 40
QUESTION_SYSTEM = (
    "You write one short question that the given note answers. "
    "Reply with the question only, ending with a question mark."
)
# Drop reasons, in the order the rules are checked (the summary lists each count).
CHUNK_RULES = ("tiny", "link_only", "code_only", "boilerplate")
PAIR_RULES = ("chosen_ignores_context", "chosen_off_source", "rejected_empty", "truncated", "identical", "error")

_WIKILINK = re.compile(r"!?\[\[[^\]]*\]\]|\[[^\]]*\]\([^)]*\)|https?://\S+")
_BOILERPLATE = re.compile(r"^\s*(---|tags?:|aliases:|created:|updated:|date:|template|todo|- \[ \]|\s)*$", re.I | re.M)


@dataclass
class SourceChunk:
    id: str
    path: str
    heading: str
    text: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8", "surrogatepass")).hexdigest()[:16]

    @property
    def origin_id(self) -> str:
        return f"{self.id}:{self.digest}"

    @property
    def folder(self) -> str:
        return self.path.rsplit("/", 1)[0] if "/" in self.path else ""


@dataclass
class Summary:
    chunks_seen: int = 0
    already_done: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CHUNK_RULES + PAIR_RULES, 0))
    questions_from_heading: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"chunks_seen": self.chunks_seen, "already_done": self.already_done, "kept": self.kept,
                "dropped": dict(self.dropped), "dropped_total": sum(self.dropped.values()),
                "questions_from_heading": self.questions_from_heading, "errors": self.errors[:20],
                "seconds": round(self.seconds, 1)}


def skip_reason(text: str) -> str | None:
    """Why a chunk makes no useful question (a CHUNK_RULES name), or None if it does."""
    without_code = CODE_FENCE.sub(" ", text)
    prose = _WIKILINK.sub(" ", without_code)
    prose = re.sub(r"[#>*_`|\-\[\]()!]+", " ", prose)
    words = CONTENT_WORD.findall(prose)
    if len(text.strip()) < MIN_CHUNK_CHARS:
        return "tiny"
    if len(CODE_FENCE.findall(text)) and len(" ".join(CONTENT_WORD.findall(_WIKILINK.sub(" ", without_code)))) < 40:
        return "code_only"
    if _WIKILINK.search(without_code) and len(words) < 8:
        return "link_only"
    if _BOILERPLATE.fullmatch(text) or len(set(w.casefold() for w in words)) < 8:
        return "boilerplate"
    return None


def balanced_sample(chunks: Iterable[SourceChunk], limit: int, seed: int = 0) -> list[SourceChunk]:
    """Up to `limit` chunks, round-robin over folders, then over the notes in each folder, so one
    huge note or folder can't fill the sample. Deterministic for a seed."""
    rng = random.Random(seed)
    by_folder: dict[str, dict[str, list[SourceChunk]]] = defaultdict(lambda: defaultdict(list))
    for c in chunks:
        by_folder[c.folder][c.path].append(c)
    queues = []
    for folder in sorted(by_folder):
        notes = [sorted(v, key=lambda c: c.id) for _, v in sorted(by_folder[folder].items())]
        for n in notes:
            rng.shuffle(n)
        rng.shuffle(notes)
        queues.append(notes)
    rng.shuffle(queues)
    out: list[SourceChunk] = []
    while len(out) < limit and any(queues):
        for notes in queues:
            if not notes:
                continue
            note = notes.pop(0)  # next note of this folder; it goes to the back if it has more
            out.append(note.pop(0))
            if note:
                notes.append(note)
            if len(out) >= limit:
                break
    return out


def heading_question(chunk: SourceChunk) -> str:
    """The fallback question, from the heading path: 'What do my notes say about X (in Y)?'."""
    title = note_title(chunk.path)
    parts = [p.strip() for p in chunk.heading.split(" > ") if p.strip()]
    topic = parts[-1] if parts else title
    where = f" in {title}" if topic.casefold() != title.casefold() else ""
    return f"What do my notes say about {topic}{where}?"


def clean_question(raw: str, chunk: SourceChunk) -> str | None:
    """The model's question if usable: one line, ends with '?', not a copy of the chunk."""
    text = raw.strip().strip('"').strip()
    text = re.sub(r"^(question|q)\s*[:.-]\s*", "", text, flags=re.I)
    line = next((l.strip() for l in text.splitlines() if "?" in l), "")
    line = line[: line.find("?") + 1] if "?" in line else ""
    if not (12 <= len(line) <= 200):
        return None
    if line.rstrip("?").strip().casefold() in chunk.text.casefold():  # copied out of the note
        return None
    # about the note: shares a word with it or its heading path ("What's your next question?" does not)
    if not content_words(line) & content_words(f"{chunk.path} {chunk.heading} {chunk.text}"):
        return None
    return line


def uses_context(answer: str, contexts: list[dict], question: str) -> bool:
    """Did the answer draw on the notes: a [n] citation, or 3+ content words from the notes that
    the question didn't already contain."""
    if parse_citations(answer, len(contexts)):
        return True
    notes = set().union(*(content_words(c["text"]) for c in contexts))
    borrowed = content_words(answer) & notes - content_words(question)
    return len(borrowed) >= 3


def with_source(contexts: list[dict], chunk: SourceChunk, limit: int) -> list[dict]:
    """Retrieved contexts, with the source chunk put first when retrieval missed it; numbered 1..n."""
    if not any(c.get("chunk_id") == chunk.id for c in contexts):
        contexts = [{"note": chunk.path, "heading": chunk.heading, "text": chunk.text, "chunk_id": chunk.id},
                    *contexts]
    return [{**c, "n": n} for n, c in enumerate(contexts[:limit], 1)]


@dataclass
class PairDraft:
    chunk: SourceChunk
    question: str
    question_from_model: bool
    prompt: list[dict]
    chosen: str
    rejected: str


def draft_pair(chunk: SourceChunk, generate: Generate, retrieve: Retrieve, *, context_chunks: int = 3,
               answer_tokens: int = ANSWER_TOKENS, fit: Callable[[list[dict]], list[dict]] | None = None,
               rules: KeepRules = KeepRules()) -> tuple[PairDraft | None, str | None, bool]:
    """One chunk -> (draft, None, from_model) or (None, drop reason, from_model)."""
    asked = generate([{"role": "system", "content": QUESTION_SYSTEM},
                      {"role": "user", "content": f"Note: {note_title(chunk.path)} > {chunk.heading}\n\n"
                                                  f"{chunk.text.strip()}"}], QUESTION_TOKENS)
    question = clean_question(asked, chunk)
    from_model = question is not None
    question = question or heading_question(chunk)
    contexts = with_source(retrieve(question), chunk, context_chunks)
    if fit is not None:
        contexts = fit(contexts)
    messages = build_rag_messages(question, contexts)
    source_n = next((c["n"] for c in contexts if c.get("chunk_id") == chunk.id), None)
    if rules.chosen == "grounded":
        chosen = grounded_answer(chunk.text, source_n) if source_n is not None else ""
    else:
        chosen = clean_markup(finish_sentence(generate(messages, answer_tokens).strip(), answer_tokens))
    rejected = finish_sentence(generate(build_plain_messages(question), answer_tokens).strip(), answer_tokens)
    if not rejected:
        return None, "rejected_empty", from_model
    if not chosen or not uses_context(chosen, contexts, question):
        return None, "chosen_ignores_context", from_model
    if source_overlap(chosen, chunk.text) < rules.min_source_overlap:
        return None, "chosen_off_source", from_model
    if _truncated(chosen, answer_tokens) or _truncated(rejected, answer_tokens):
        return None, "truncated", from_model
    if " ".join(chosen.split()).casefold() == " ".join(rejected.split()).casefold():
        return None, "identical", from_model
    return PairDraft(chunk, question, from_model, messages, chosen, rejected), None, from_model


_SENTENCE_END = re.compile(r"[.!?](?:\s*\[\d+(?:\s*,\s*\d+)*\])?(?=\s|$)")


def finish_sentence(text: str, max_tokens: int) -> str:
    """An answer cut off by max_tokens, trimmed back to its last whole sentence when that keeps
    a quarter of it or more; otherwise unchanged (and the 'truncated' rule drops it)."""
    if not _truncated(text, max_tokens):
        return text
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    if ends and ends[-1] >= len(text) * 0.25:
        return text[: ends[-1]].strip()
    return text


def _truncated(text: str, max_tokens: int) -> bool:
    """Cut off by max_tokens: long, and not ending a sentence (tokens ~ 4 chars of English)."""
    return len(text) >= max_tokens * 3 and not text.rstrip().endswith((".", "!", "?", ")", "]", "`", '"'))


def catalog_chunks(catalog) -> list[SourceChunk]:
    with catalog.lock:
        rows = catalog.db.execute("SELECT id, path, heading, text FROM chunks ORDER BY path, ordinal").fetchall()
    return [SourceChunk(*r) for r in rows]


def done_origins(log) -> set[str]:
    """Origins already paired; only the origin column is read, so one damaged row can't stop a run."""
    return log._read(lambda conn: {r[0] for r in conn.execute(
        "SELECT origin_id FROM pairs WHERE source = 'synthetic'")})


def generate_pairs(chunks: list[SourceChunk], log, generate: Generate, retrieve: Retrieve, *, limit: int,
                   seed: int = 0, context_chunks: int = 3, fit=None, answer_tokens: int = ANSWER_TOKENS,
                   progress: Callable[[Summary, int], None] | None = None,
                   should_stop: Callable[[], bool] | None = None, rules: KeepRules = KeepRules()) -> Summary:
    """Sample usable chunks not yet done, draft a pair for each, store the kept ones. A failure
    on one chunk is that chunk's ('error'), the run goes on."""
    import time

    started = time.perf_counter()
    summary = Summary()
    done = done_origins(log)
    usable = []
    for c in chunks:
        if c.origin_id in done:
            summary.already_done += 1
            continue
        reason = skip_reason(c.text)
        if reason:
            summary.dropped[reason] += 1
        else:
            usable.append(c)
    sample = balanced_sample(usable, limit, seed)
    if progress:
        progress(summary, len(sample))
    for chunk in sample:
        if should_stop and should_stop():
            break
        summary.chunks_seen += 1
        try:
            draft, reason, from_model = draft_pair(chunk, generate, retrieve, context_chunks=context_chunks, fit=fit,
                                                     answer_tokens=answer_tokens, rules=rules)
        except Exception as exc:  # noqa: BLE001 - one chunk's failure is reported, the batch goes on
            summary.dropped["error"] += 1
            summary.errors.append(f"{chunk.path} ({chunk.heading or 'top'}): {type(exc).__name__}: {exc}")
            if progress:
                progress(summary, len(sample))
            continue
        summary.questions_from_heading += not from_model
        if draft is None:
            summary.dropped[reason] += 1
        elif log.add_synthetic_pair(draft.prompt, draft.chosen, draft.rejected, chunk.origin_id):
            summary.kept += 1
        else:
            summary.dropped["identical"] += 1
        if progress:
            progress(summary, len(sample))
    summary.seconds = time.perf_counter() - started
    return summary


def indexer_retriever(indexer, k: int) -> Retrieve:
    from ..index.search import search

    def retrieve(question: str) -> list[dict]:
        return [{"note": h.path, "heading": h.heading, "text": h.text, "chunk_id": h.chunk_id}
                for h in search(indexer, question, k)]

    return retrieve


def context_fitter(backend, max_tokens: int, question_chars: int = 200):
    """Fit contexts into the model's window as the daemon's own prompts do."""
    from ..llm.prompts import context_budget

    def fit(contexts: list[dict]) -> list[dict]:
        budget = context_budget(backend.n_ctx, max_tokens, "x" * question_chars, backend.count_tokens)
        return fit_contexts(contexts, budget, backend.count_tokens)

    return fit
