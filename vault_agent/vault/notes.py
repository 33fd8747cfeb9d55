"""Parse one Obsidian note (markdown-it-py) into frontmatter, links, tags and heading-aware chunks."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import PurePosixPath
from typing import Any

import yaml

# [[Target#Heading|alias]] and ![[embed]]; the target may not contain ] | # or newlines.
WIKILINK = re.compile(r"(!?)\[\[([^\[\]|#\n]*)(?:#([^\[\]|\n]*))?(?:\|([^\[\]\n]*))?\]\]")
# Obsidian tags: '#' after start/space/punctuation, at least one non-digit, nested with '/'.
TAG = re.compile(r"(?:(?<=^)|(?<=[\s(\[,;]))#([\w/-]*[^\W\d][\w/-]*)", re.UNICODE)


@dataclass(frozen=True)
class Link:
    target: str
    heading: str | None
    alias: str | None
    embed: bool


@dataclass
class Chunk:
    note_path: str  # vault-relative, forward slashes
    ordinal: int
    headings: list[str]  # heading path, outermost first
    text: str  # the raw markdown of the section (or a slice of it)
    start_line: int  # 0-based, inclusive

    @property
    def heading_path(self) -> str:
        return " > ".join(self.headings)

    @property
    def anchor(self) -> str:
        """The heading Obsidian links to: the innermost one."""
        return self.headings[-1] if self.headings else ""


@dataclass
class Note:
    path: str
    title: str
    frontmatter: dict[str, Any]
    tags: list[str]
    aliases: list[str]
    links: list[Link]
    chunks: list[Chunk] = field(default_factory=list)
    frontmatter_error: str | None = None


@lru_cache(maxsize=1)
def _markdown():
    from markdown_it import MarkdownIt
    from mdit_py_plugins.front_matter import front_matter_plugin

    return MarkdownIt("commonmark").enable("table").use(front_matter_plugin)


def _as_list(value: Any, split: str = r",") -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in re.split(split, value) if v.strip()]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if v is not None]
    return [str(value)]


def _parse_frontmatter(raw: str) -> tuple[dict[str, Any], str | None]:
    try:
        data = yaml.safe_load(raw) or {}
    except yaml.YAMLError as e:
        return {}, f"frontmatter is not valid YAML: {str(e).splitlines()[0]}"
    if not isinstance(data, dict):
        return {}, "frontmatter is not a key: value mapping"
    return data, None


def parse_note(path: str, text: str, max_chunk_chars: int = 1000) -> Note:
    """Parse markdown text of the note at vault-relative `path`."""
    tokens = _markdown().parse(text)
    lines = text.splitlines()
    frontmatter: dict[str, Any] = {}
    fm_error = None
    body_start = 0
    code_lines: set[int] = set()
    headings: list[tuple[int, int, str]] = []  # (line, level, title)
    heading_lines: set[int] = set()
    for i, tok in enumerate(tokens):
        if tok.type == "front_matter":
            frontmatter, fm_error = _parse_frontmatter(tok.content)
            body_start = tok.map[1] if tok.map else 0
        elif tok.type in ("fence", "code_block") and tok.map:
            code_lines.update(range(tok.map[0], tok.map[1]))
        elif tok.type == "heading_open" and tok.map:
            title = tokens[i + 1].content.strip()
            headings.append((tok.map[0], int(tok.tag[1]), title))
            heading_lines.update(range(tok.map[0], tok.map[1]))

    prose = "\n".join(line for n, line in enumerate(lines) if n >= body_start and n not in code_lines)
    prose = re.sub(r"`[^`\n]*`", "", prose)  # inline code holds neither links nor tags
    links = [
        Link(
            target=m.group(2).strip(),
            heading=(m.group(3) or "").strip() or None,
            alias=(m.group(4) or "").strip() or None,
            embed=bool(m.group(1)),
        )
        for m in WIKILINK.finditer(prose)
    ]
    tags = _as_list(frontmatter.get("tags") or frontmatter.get("tag"), split=r"[,\s]+")
    tags = [t.lstrip("#") for t in tags]
    for m in TAG.finditer(WIKILINK.sub(" ", prose)):
        if m.group(1) not in tags:
            tags.append(m.group(1))

    title = PurePosixPath(path).stem
    note = Note(
        path=path,
        title=title,
        frontmatter=frontmatter,
        tags=tags,
        aliases=_as_list(frontmatter.get("aliases") or frontmatter.get("alias")),
        links=links,
        frontmatter_error=fm_error,
    )
    note.chunks = _chunk(path, lines, body_start, headings, heading_lines, max_chunk_chars)
    return note


def _chunk(path, lines, body_start, headings, heading_lines, max_chars) -> list[Chunk]:
    """One chunk per heading section; long sections split on paragraph, then line, then char bounds."""
    bounds = [(body_start, 0, None)] + [(line, level, title) for line, level, title in headings]
    stack: list[tuple[int, str]] = []
    chunks: list[Chunk] = []
    for idx, (start, level, title) in enumerate(bounds):
        if title is not None:
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, title))
        end = bounds[idx + 1][0] if idx + 1 < len(bounds) else len(lines)
        body_lines = [l for n, l in enumerate(lines[start:end], start) if n not in heading_lines]
        body = "\n".join(body_lines).strip()
        if not body:
            continue
        for piece in split_bounded(body, max_chars):
            chunks.append(Chunk(path, len(chunks), [t for _, t in stack], piece, start))
    return chunks


def split_bounded(text: str, max_chars: int) -> list[str]:
    """Split text into pieces of at most max_chars, preferring paragraph, line, sentence, word breaks."""
    if len(text) <= max_chars:
        return [text]
    for sep in ("\n\n", "\n", ". ", " "):
        parts = text.split(sep)
        if len(parts) > 1:
            break
    else:
        return [text[i : i + max_chars] for i in range(0, len(text), max_chars)]
    out: list[str] = []
    current = ""
    for part in parts:
        candidate = f"{current}{sep}{part}" if current else part
        if len(candidate) <= max_chars:
            current = candidate
            continue
        if current:
            out.append(current.strip())
        if len(part) > max_chars:
            out.extend(split_bounded(part, max_chars))
            current = ""
        else:
            current = part
    if current.strip():
        out.append(current.strip())
    return [p for p in out if p]
