"""Hybrid retrieval: dense (chromadb) and BM25 (FTS5) rankings fused by reciprocal rank, then grouped
by note so each note shows its best passage, at most `per_note` passages from any one note.

Two corrections on top of plain fusion, both measured by benchmarks/retrieval_eval.py --ablate:
- Rare names. A query word that only a handful of chunks contain and that the notes write as a name
  (a code name, an id, a person) is evidence the dense model cannot weigh: sections that differ only
  by that word embed as near-ties, and a single BM25 vote can lose to them in the fusion. Chunks
  holding the query's rare names get an extra vote in proportion to how much of them they cover.
  Rare ordinary words get none: in a small vault nearly every word is rare.
- Best passage per note. A note's rank comes from its best chunk, and the passage shown for it is
  the one that covers the query's rare names best, then the one with the best fused score.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

from .indexer import Indexer

RRF_K = 60  # the usual reciprocal-rank-fusion constant: flattens the head of each ranking


@dataclass(frozen=True)
class RankOptions:
    """Knobs of the fusion; the defaults are what measured best (benchmarks/retrieval_eval.py --ablate)."""

    rare_bonus: float = 1.0  # weight of the rare-term vote, in units of one rank-1 vote
    rare_max_df: int = 3  # a word is rare when at most this many chunks contain it ...
    rare_max_share: float = 0.002  # ... or at most this share of all chunks (for big vaults)
    best_passage: bool = True  # show a note's best passage (rare-term coverage first), not the first fused
    keyword_weight: float = 1.0  # weight of the BM25 ranking (all fields) in the fusion; dense weighs 1
    bm25_fields: tuple[float, float, float] = (4.0, 2.0, 1.0)  # BM25 weights of title+aliases, heading, body
    bm25_min_match: int = 2  # BM25 ranks only chunks holding two of the query's words (when 3+ are asked)
    unknown_only: bool = False  # count only rare words the embedding model has no whole token for, or with digits
    names_only: bool = True  # count only rare words the notes write as names (see written_as_name)


DEFAULT_OPTIONS = RankOptions()


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


def fuse(rankings: list[list[str]], weights: list[float] | None = None) -> list[tuple[str, float]]:
    scores: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights or [1.0] * len(rankings)):
        for rank, cid in enumerate(ranking):
            scores[cid] = scores.get(cid, 0.0) + weight / (RRF_K + rank + 1)
    return sorted(scores.items(), key=lambda kv: -kv[1])


_VOCABULARIES: dict[str, frozenset[str]] = {}


def model_vocabulary(embedder) -> frozenset[str]:
    """Whole words the embedding model has a token of its own for. A word it must spell out in pieces
    (a code name, a surname, a product id) is one the dense ranking cannot tell from its neighbours;
    a small vault makes every ordinary word rare, so rarity alone is no sign of a name."""
    if embedder.label not in _VOCABULARIES:
        try:
            vocab = embedder.model.tokenizer.get_vocab()
        except AttributeError:  # a model without a HF tokenizer: treat every word as unknown
            vocab = {}
        _VOCABULARIES[embedder.label] = frozenset(w for w in vocab if w.isalnum())
    return _VOCABULARIES[embedder.label]


def written_as_name(word: str, texts: list[str], known: frozenset[str]) -> bool:
    """Whether the notes write word (or words it stems from) as a name: with a digit, capitalised where
    no sentence starts ("the Zorvane protocol", "ask Priya"), or, for a word the embedding model has no
    token of its own for, capitalised every time. A rare ordinary word ("enqueues", "Put a reference")
    is an accident of a small vault; a rare name is what the user is looking for."""
    if any(ch.isdigit() for ch in word):
        return True
    found = []
    for text in texts:
        for m in re.finditer(rf"\b{re.escape(word)}\w*", text, re.IGNORECASE):
            before = text[: m.start()].rstrip(" \t*_[(\"'`")
            capital = m.group(0)[0].isupper()
            if capital and before and before[-1] not in ".!?:\n#-|>":
                return True
            found.append(capital)
    return bool(found) and all(found) and word not in known


def rare_coverage(indexer: Indexer, query: str, opts: RankOptions) -> tuple[dict[str, float], tuple[str, ...]]:
    """(chunk id -> share (0..1) of the query's rare words that the chunk contains, weighted by rarity;
    those words). Both empty when the query has no rare word that the vault contains."""
    total = indexer.catalog.counts()["chunks"]
    limit = max(opts.rare_max_df, int(total * opts.rare_max_share))
    holders = indexer.catalog.rare_term_chunks(query, limit)
    if opts.unknown_only:
        known = model_vocabulary(indexer.embedder)
        holders = {t: ids for t, ids in holders.items() if t not in known or any(ch.isdigit() for ch in t)}
    if opts.names_only:
        rows = indexer.catalog.chunks_by_id(sorted({cid for ids in holders.values() for cid in ids}))
        known = model_vocabulary(indexer.embedder)
        texts = {t: [rows[c].text for c in ids if c in rows] for t, ids in holders.items()}
        holders = {t: ids for t, ids in holders.items() if written_as_name(t, texts[t], known)}
    if not holders:
        return {}, ()
    import math

    weight = {term: math.log(1 + total / len(ids)) for term, ids in holders.items()}
    whole = sum(weight.values())
    cover: dict[str, float] = {}
    for term, ids in holders.items():
        for cid in ids:
            cover[cid] = cover.get(cid, 0.0) + weight[term] / whole
    return cover, tuple(holders)


def search(
    indexer: Indexer,
    query: str,
    k: int | None = None,
    *,
    hybrid: bool | None = None,
    per_note: int | None = None,
    options: RankOptions | None = None,
) -> list[Hit]:
    s = indexer.settings.search
    opts = options or DEFAULT_OPTIONS
    k = k or s.top_k
    hybrid = s.hybrid if hybrid is None else hybrid
    per_note = per_note or s.per_note
    if not query.strip():
        return []
    dense = [cid for cid, _ in indexer.vectors.query(indexer.embedder.embed_query(query), s.candidates)]
    rankings, weights = [dense], [1.0]
    cover: dict[str, float] = {}
    if hybrid:
        names: tuple[str, ...] = ()
        if opts.rare_bonus or opts.best_passage:
            cover, names = rare_coverage(indexer, query, opts)
        keyword = indexer.catalog.keyword_search(
            query, s.candidates, weights=opts.bm25_fields, min_match=opts.bm25_min_match, alone=names
        )
        rankings.append(keyword)
        weights.append(opts.keyword_weight)
    scores = dict(fuse(rankings, weights))
    for cid, share in cover.items():  # a vote as strong as rank 1 of a ranker, scaled by coverage
        scores[cid] = scores.get(cid, 0.0) + opts.rare_bonus * share / (RRF_K + 1)
    rows = indexer.catalog.chunks_by_id(list(scores))  # vectors without a row are stale: skipped

    by_note: dict[str, list[str]] = {}
    for cid in sorted(scores, key=lambda c: -scores[c]):
        if cid in rows:
            by_note.setdefault(rows[cid].path, []).append(cid)
    if opts.best_passage:  # the passage shown: rare words covered first, then fused score
        for cids in by_note.values():
            cids.sort(key=lambda c: (-round(cover.get(c, 0.0), 6), -scores[c]))
    # each note keeps the places its best fused chunks earned; the passages chosen above fill them
    slots = []
    for path, cids in by_note.items():
        places = sorted((scores[c] for c in cids), reverse=True)[:per_note]
        slots.extend((place, path, cid) for place, cid in zip(places, cids))
    slots.sort(key=lambda slot: -slot[0])
    hits: list[Hit] = []
    for place, path, cid in slots[:k]:
        row = rows[cid]
        title = path.rsplit("/", 1)[-1].removesuffix(".md")
        hits.append(Hit(cid, path, title, row.heading, row.anchor, row.text, place))
    return hits
