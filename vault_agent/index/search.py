"""Hybrid retrieval: dense (chromadb) and BM25 (FTS5) rankings fused by reciprocal rank, at most
`per_note` hits from any one note."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from .indexer import Indexer

RRF_K = 60  # the usual reciprocal-rank-fusion constant: flattens the head of each ranking


@dataclass
class Hit:
    chunk_id: str
    path: str
    title: str
    heading: str
    anchor: str
    text: str
    score: float

    @property
    def link(self) -> str:
        target = self.path[:-3] if self.path.lower().endswith(".md") else self.path
        return f"[[{target}#{self.anchor}]]" if self.anchor else f"[[{target}]]"

    def obsidian_uri(self, vault_name: str) -> str:
        return f"obsidian://open?vault={quote(vault_name, safe='')}&file={quote(self.path, safe='')}"

    def snippet(self, width: int = 200) -> str:
        flat = " ".join(self.text.split())
        return flat if len(flat) <= width else flat[: width - 1].rsplit(" ", 1)[0] + "…"

    def to_dict(self, vault_name: str) -> dict:
        return {
            "chunk_id": self.chunk_id,
            "path": self.path,
            "title": self.title,
            "heading": self.heading,
            "link": self.link,
            "uri": self.obsidian_uri(vault_name),
            "snippet": self.snippet(),
            "text": self.text,
            "score": round(self.score, 5),
        }


def fuse(rankings: list[list[str]]) -> list[tuple[str, float]]:
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, cid in enumerate(ranking):
            scores[cid] = scores.get(cid, 0.0) + 1.0 / (RRF_K + rank + 1)
    return sorted(scores.items(), key=lambda kv: -kv[1])


def search(
    indexer: Indexer,
    query: str,
    k: int | None = None,
    *,
    hybrid: bool | None = None,
    per_note: int | None = None,
) -> list[Hit]:
    s = indexer.settings.search
    k = k or s.top_k
    hybrid = s.hybrid if hybrid is None else hybrid
    per_note = per_note or s.per_note
    if not query.strip():
        return []
    dense = [cid for cid, _ in indexer.vectors.query(indexer.embedder.embed_query(query), s.candidates)]
    rankings = [dense]
    if hybrid:
        rankings.append(indexer.catalog.keyword_search(query, s.candidates))
    fused = fuse(rankings)
    rows = indexer.catalog.chunks_by_id([cid for cid, _ in fused])  # vectors without a row are stale: skipped
    hits: list[Hit] = []
    per: dict[str, int] = {}
    for cid, score in fused:
        row = rows.get(cid)
        if row is None or per.get(row.path, 0) >= per_note:
            continue
        per[row.path] = per.get(row.path, 0) + 1
        title = row.path.rsplit("/", 1)[-1].removesuffix(".md")
        hits.append(Hit(cid, row.path, title, row.heading, row.anchor, row.text, score))
        if len(hits) >= k:
            break
    return hits
