"""What a synthetic pair's chosen answer must be before it teaches the model anything.

Measured on a real documentation vault: answers with the notes in the prompt often copy the
prompt's format instead of citing it (`[5] File recovery` header lines, `> [!tip]` callout marks),
and training on them taught the adapter to do the same: it cited the source note less often.
So the chosen answer is cleaned of that markup, and dropped when it shares too little with the
chunk it should be drawn from. `grounded` makes the chosen answer the source chunk's own first
sentences, cited, instead of the model's answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_CALLOUT = re.compile(r"\[![\w-]+\][+-]?")  # > [!tip], [!note]- ...
_QUOTE_MARK = re.compile(r"^[ \t]*(?:>[ \t]?)+", re.M)
_HEADING_MARK = re.compile(r"^[ \t]*#{1,6}[ \t]+", re.M)
# a line that is only a prompt block header: "[5] File recovery" or "[2] Guide > Setup" (no sentence)
_HEADER_LINE = re.compile(r"^[ \t]*\[\d+\][ \t]+[^\n.!?]{0,120}$\n?", re.M)
_LIST_MARK = re.compile(r"^[ \t]*(?:[-*+]|\d+[.)])[ \t]+(?:\[[ xX]\][ \t]+)?", re.M)
_WIKILINK = re.compile(r"!?\[\[([^\]|#]*)(?:#[^\]|]*)?(?:\|([^\]]*))?\]\]")
_MDLINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
CONTENT_WORD = re.compile(r"[^\W\d_]{4,}", re.UNICODE)  # a word of 4+ letters: what "shares words" counts
CODE_FENCE = re.compile(r"```.*?(```|$)", re.S)
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def clean_markup(text: str) -> str:
    """The answer's prose without the markup it copied from the prompt's note blocks."""
    text = _HEADER_LINE.sub("", text)
    text = _CALLOUT.sub("", text)
    text = _QUOTE_MARK.sub("", text)
    text = _HEADING_MARK.sub("", text)
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def content_words(text: str) -> set[str]:
    """The text's words of 4+ letters, casefolded."""
    return {w.casefold() for w in CONTENT_WORD.findall(text)}


def source_overlap(answer: str, source: str) -> float:
    """Share of the answer's content words (4+ letters) that appear in the source chunk."""
    words = content_words(answer)
    return len(words & content_words(source)) / len(words) if words else 0.0


_EMPHASIS = re.compile(r"[*`|]+|(?<![^\W_])_+|_+(?![^\W_])")  # not the _ inside node_modules


def plain_prose(markdown: str) -> str:
    """A note chunk as running prose: links to their text, no list, heading, quote or callout marks.
    A list item, a table row or a heading ends a thought; a paragraph hard-wrapped over several lines
    (most documentation is) stays one."""
    text = _WIKILINK.sub(lambda m: m.group(2) or m.group(1), markdown)
    text = _MDLINK.sub(r"\1", text)
    text = CODE_FENCE.sub(" ", text)
    headings = headings_of(text)
    units: list[str] = []
    joining = False  # the previous line was prose that may go on
    for raw in clean_markup(text).splitlines():
        line = raw.strip()
        if not line:
            joining = False
            continue
        row = line.startswith("|")
        whole = row or line in headings  # a table row or a heading is a unit of its own
        if row:  # its cells, comma-separated; the |---| rule row: nothing
            line = ", ".join(c.strip() for c in line.strip("|").split("|") if c.strip(" -:"))
            if not line:
                continue
        if joining and not whole and not _LIST_MARK.match(raw):
            units[-1] = f"{units[-1]} {line}"
        else:
            units.append(_LIST_MARK.sub("", line))
        joining = not whole
    # a unit without an end mark (a list item, a table cell) still ends a thought
    joined = " ".join(u if u[-1] in ".!?:" else f"{u}." for u in units)
    return _EMPHASIS.sub("", joined).strip()


def headings_of(markdown: str) -> set[str]:
    """The heading lines' texts as clean_markup leaves them (their # marks gone)."""
    return {_HEADING_MARK.sub("", line).strip() for line in markdown.splitlines() if _HEADING_MARK.match(line)}


def grounded_answer(chunk_text: str, n: int, max_chars: int = 480) -> str:
    """The chunk's first sentences (up to max_chars, at least one), cited as [n]."""
    sentences = _SENTENCE.split(plain_prose(chunk_text))
    out = ""
    for sentence in sentences:
        if out and len(out) + len(sentence) + 1 > max_chars:
            break
        out = f"{out} {sentence}".strip()
    out = out[: max_chars * 2].rstrip()
    if out and out[-1] not in ".!?":
        out += "."
    return f"{out[:-1]} [{n}]{out[-1]}" if out else ""


@dataclass(frozen=True)
class KeepRules:
    """train.synthetic_* settings: where the chosen answer comes from, and how close to its source
    chunk it must stay."""

    chosen: str = "model"  # "model": the served model's answer with context; "grounded": the chunk quoted
    min_source_overlap: float = 0.3

    @classmethod
    def from_settings(cls, train) -> KeepRules:
        return cls(train.synthetic_chosen, train.synthetic_min_source_overlap)
