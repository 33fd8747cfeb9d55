"""Chat messages for answering from numbered notes, fitting them into the context window,
and reading the [n] citations back out of an answer."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import PurePosixPath

RAG_SYSTEM = (
    "You answer questions using only the numbered notes the user gives you. "
    "Cite the notes you use by number, like [1] or [2]. "
    "If the notes do not contain the answer, say that you don't know. "
    "Be concise."
)
PLAIN_SYSTEM = "You are a helpful assistant. Answer the question concisely."

# Slack for the chat template's role markers and separators, which count_tokens doesn't see.
TEMPLATE_OVERHEAD = 32
# A truncated context shorter than this is noise; drop it instead.
MIN_CONTEXT_TOKENS = 24
_ELLIPSIS = " …"

_CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")  # [1], also [1, 2] which small models write


def note_title(note: str) -> str:
    """'Projects/Alpha plan.md' -> 'Alpha plan' (Obsidian shows the file name as the title)."""
    name = PurePosixPath(note.replace("\\", "/")).name
    return name[:-3] if name.lower().endswith(".md") else name


def context_header(ctx: dict) -> str:
    heading = (ctx.get("heading") or "").strip()
    title = note_title(ctx["note"])
    first, _, rest = heading.partition(" > ")
    if first.casefold() == title.casefold():  # the H1 usually repeats the file name
        heading = rest
    return f"[{ctx['n']}] {title} > {heading}" if heading else f"[{ctx['n']}] {title}"


def format_context(ctx: dict) -> str:
    return f"{context_header(ctx)}\n{ctx['text'].strip()}"


def _user_message(question: str, contexts: list[dict]) -> str:
    blocks = "\n\n".join(format_context(c) for c in contexts)
    return f"Notes:\n\n{blocks}\n\nQuestion: {question.strip()}"


def build_rag_messages(question: str, contexts: list[dict]) -> list[dict]:
    """System rules, then one user message: numbered note blocks followed by the question."""
    return [
        {"role": "system", "content": RAG_SYSTEM},
        {"role": "user", "content": _user_message(question, contexts)},
    ]


def build_plain_messages(question: str) -> list[dict]:
    """The same question with no notes (the 'rejected' side of synthetic preference pairs)."""
    return [
        {"role": "system", "content": PLAIN_SYSTEM},
        {"role": "user", "content": question.strip()},
    ]


def context_budget(n_ctx: int, max_tokens: int, question: str, count_tokens: Callable[[str], int]) -> int:
    """Tokens left for the note blocks once the rules, question, template and answer fit."""
    fixed = count_tokens(RAG_SYSTEM) + count_tokens(_user_message(question, []))
    return n_ctx - max_tokens - fixed - TEMPLATE_OVERHEAD


def fit_contexts(contexts: list[dict], budget_tokens: int, count_tokens: Callable[[str], int]) -> list[dict]:
    """Keep contexts in rank order while they fit `budget_tokens`; truncate the first one that
    doesn't and drop the rest. Inputs are not modified; a truncated context is a copy."""
    kept: list[dict] = []
    left = budget_tokens
    for ctx in contexts:
        cost = count_tokens(format_context(ctx)) + 2  # + the blank line between blocks
        if cost <= left:
            kept.append(ctx)
            left -= cost
            continue
        room = left - count_tokens(context_header(ctx) + _ELLIPSIS) - 3
        if room >= MIN_CONTEXT_TOKENS:
            text = _truncate(ctx["text"].strip(), room, count_tokens)
            if text:
                kept.append({**ctx, "text": text + _ELLIPSIS})
        break
    return kept


def _truncate(text: str, max_tokens: int, count_tokens: Callable[[str], int]) -> str:
    """Longest prefix of `text` (cut at whitespace when possible) within max_tokens.
    Binary search over characters: count_tokens is all we have, and it's fast."""
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count_tokens(text[:mid]) <= max_tokens:
            lo = mid
        else:
            hi = mid - 1
    cut = text[:lo]
    if lo < len(text):
        space = cut.rfind(" ")
        if space > len(cut) // 2:  # don't lose half the text just to end on a word
            cut = cut[:space]
    return cut.rstrip()


def parse_citations(answer: str, n_contexts: int) -> list[int]:
    """Distinct [n] numbers with 1 <= n <= n_contexts, in order of first appearance."""
    seen: list[int] = []
    for match in _CITATION.finditer(answer):
        for part in match.group(1).split(","):
            n = int(part)
            if 1 <= n <= n_contexts and n not in seen:
                seen.append(n)
    return seen
