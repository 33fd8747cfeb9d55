"""The index's SQLite side: which notes and chunks are indexed (content hashes, mtimes), per-file
errors, and an FTS5 table for BM25 keyword ranking. It is the source of truth for what a restart
may skip; chromadb only holds vectors keyed by chunk id."""

from __future__ import annotations

import re
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS notes (
    path TEXT PRIMARY KEY, title TEXT NOT NULL, mtime_ns INTEGER NOT NULL, size INTEGER NOT NULL,
    content_hash TEXT NOT NULL, indexed_at TEXT NOT NULL, warning TEXT
);
CREATE TABLE IF NOT EXISTS chunks (
    rowid INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, path TEXT NOT NULL, ordinal INTEGER NOT NULL,
    heading TEXT NOT NULL, anchor TEXT NOT NULL, text TEXT NOT NULL, start_line INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_path ON chunks(path);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(title, heading, body, tokenize='porter unicode61');
CREATE TABLE IF NOT EXISTS failures (path TEXT PRIMARY KEY, error TEXT NOT NULL, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# Words that match everywhere and only add noise to a keyword OR-query.
STOPWORDS = frozenset(
    "a an and are as at be by can did do does for from had has have how i if in is it its me my of on or our "
    "should so than that the their them then there these they this to was we were what when where which who "
    "why will with would you your".split()
)


def query_words(query: str) -> list[str]:
    """The words of a query worth matching, lower-cased, each once."""
    return list(dict.fromkeys(w for w in re.findall(r"\w+", query.lower()) if w not in STOPWORDS and len(w) > 1))


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class ChunkRow:
    id: str
    path: str
    ordinal: int
    heading: str
    anchor: str
    text: str
    start_line: int


class Catalog:
    def __init__(self, path: Path, *, readonly: bool = False):
        self.readonly = readonly
        if readonly:
            # Never creates or migrates anything. No catalog yet reads as an empty one (in memory).
            if path.exists():
                # mode=ro still creates -wal/-shm files. With no WAL left to replay (the writer closed
                # cleanly) and the shared index lock held (no writer can start), the file is immutable
                # for as long as we read it; after a writer's crash, ro lets SQLite replay its WAL.
                wal = path.with_name(path.name + "-wal")
                mode = "mode=ro" if wal.exists() and wal.stat().st_size > 0 else "immutable=1"
                self.db = sqlite3.connect(f"{path.resolve().as_uri()}?{mode}", uri=True, check_same_thread=False,
                                          isolation_level=None)
            else:
                self.db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
                self.db.executescript(SCHEMA)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # the index can always be rebuilt from the vault
            self.db.executescript(SCHEMA)
        self.lock = threading.RLock()

    def close(self) -> None:
        with self.lock:
            self.db.close()

    # --- reads ---------------------------------------------------------------------------
    def note_stats(self) -> dict[str, tuple[int, int, str]]:
        with self.lock:
            rows = self.db.execute("SELECT path, mtime_ns, size, content_hash FROM notes").fetchall()
        return {p: (m, s, h) for p, m, s, h in rows}

    def chunk_ids(self, path: str) -> set[str]:
        with self.lock:
            return {r[0] for r in self.db.execute("SELECT id FROM chunks WHERE path=?", (path,))}

    def all_chunk_ids(self) -> set[str]:
        with self.lock:
            return {r[0] for r in self.db.execute("SELECT id FROM chunks")}

    def paths_of(self, ids: set[str]) -> set[str]:
        """The notes these chunk ids belong to."""
        out: set[str] = set()
        ids_list = sorted(ids)
        with self.lock:
            for i in range(0, len(ids_list), 500):
                part = ids_list[i : i + 500]
                marks = ",".join("?" * len(part))
                out.update(r[0] for r in self.db.execute(f"SELECT DISTINCT path FROM chunks WHERE id IN ({marks})", part))
        return out

    def chunks_by_id(self, ids: list[str]) -> dict[str, ChunkRow]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        with self.lock:
            rows = self.db.execute(
                f"SELECT id, path, ordinal, heading, anchor, text, start_line FROM chunks WHERE id IN ({marks})", ids
            ).fetchall()
        return {r[0]: ChunkRow(*r) for r in rows}

    def keyword_search(
        self,
        query: str,
        n: int,
        weights: tuple[float, float, float] = (4.0, 2.0, 1.0),
        min_match: int = 1,
        alone: tuple[str, ...] = (),
    ) -> list[str]:
        """Chunk ids ranked by BM25; `weights` are those of title (with aliases), heading and body. With
        min_match 2 (and at least 3 words), only chunks that hold two of the query's words count, or one
        of the words in `alone` (names): a chunk that matched one incidental word of a paraphrased
        question is noise to the fusion."""
        words = query_words(query)
        if not words:
            return []
        if min_match >= 2 and len(words) >= 3:
            pairs = [(a, b) for i, a in enumerate(words[:10]) for b in words[i + 1 : 10]]
            terms = [f'("{a}" AND "{b}")' for a, b in pairs] + [f'"{w}"' for w in alone if w in words]
            # no fallback to single words when no chunk holds two: that put the noise back (measured)
            return self._bm25(" OR ".join(terms), n, weights)
        return self._bm25(" OR ".join(f'"{w}"' for w in words), n, weights)

    def _bm25(self, match: str, n: int, weights: tuple[float, float, float]) -> list[str]:
        # Rank inside the FTS table first and join only the top n: joining every match before sorting
        # made common words (10k+ matching chunks) cost twice as much.
        with self.lock:
            rows = self.db.execute(
                "SELECT c.id FROM (SELECT rowid, bm25(chunks_fts, ?, ?, ?) AS score FROM chunks_fts "
                "WHERE chunks_fts MATCH ? ORDER BY score LIMIT ?) f JOIN chunks c ON c.rowid = f.rowid "
                "ORDER BY f.score",
                (*weights, match, n),
            ).fetchall()
        return [r[0] for r in rows]

    def rare_term_chunks(self, query: str, max_df: int) -> dict[str, list[str]]:
        """For each query word that at least one and at most max_df chunks contain (stemmed as the
        FTS table stems it): the ids of those chunks. Words in more chunks are left out."""
        out: dict[str, list[str]] = {}
        with self.lock:
            for word in query_words(query):
                rows = self.db.execute(
                    "SELECT c.id FROM (SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ? LIMIT ?) f "
                    "JOIN chunks c ON c.rowid = f.rowid",
                    (f'"{word}"', max_df + 1),
                ).fetchall()
                if 0 < len(rows) <= max_df:
                    out[word] = [r[0] for r in rows]
        return out

    def counts(self) -> dict[str, int]:
        with self.lock:
            notes = self.db.execute("SELECT count(*) FROM notes").fetchone()[0]
            chunks = self.db.execute("SELECT count(*) FROM chunks").fetchone()[0]
        return {"notes": notes, "chunks": chunks}

    def failures(self) -> dict[str, str]:
        with self.lock:
            return dict(self.db.execute("SELECT path, error FROM failures ORDER BY path").fetchall())

    def warnings(self) -> dict[str, str]:
        with self.lock:
            return dict(self.db.execute("SELECT path, warning FROM notes WHERE warning IS NOT NULL ORDER BY path"))

    def get_meta(self, key: str) -> str | None:
        with self.lock:
            row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    # --- writes (each a single transaction) --------------------------------------------------
    def set_meta(self, key: str, value: str) -> None:
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def replace_notes(self, notes: list[tuple[dict, list[ChunkRow]]]) -> None:
        """Store each note's row and exactly these chunks, in one transaction."""
        with self.lock, self.db:
            self.db.execute("BEGIN")
            for note, chunks in notes:
                self._delete_chunks(note["path"])
                self.db.execute(
                    "INSERT OR REPLACE INTO notes(path, title, mtime_ns, size, content_hash, indexed_at, warning) "
                    "VALUES (:path, :title, :mtime_ns, :size, :content_hash, :indexed_at, :warning)",
                    {**note, "indexed_at": now_iso()},
                )
                self.db.execute("DELETE FROM failures WHERE path=?", (note["path"],))
                for c in chunks:
                    cur = self.db.execute(
                        "INSERT INTO chunks(id, path, ordinal, heading, anchor, text, start_line) VALUES (?,?,?,?,?,?,?)",
                        (c.id, c.path, c.ordinal, c.heading, c.anchor, c.text, c.start_line),
                    )
                    self.db.execute(
                        "INSERT INTO chunks_fts(rowid, title, heading, body) VALUES (?,?,?,?)",
                        (cur.lastrowid, note["title"], c.heading, c.text),
                    )

    def touch_note(self, path: str, mtime_ns: int, size: int) -> None:
        """Content unchanged (same hash) but the file was re-saved: remember the new stat."""
        with self.lock:
            self.db.execute("UPDATE notes SET mtime_ns=?, size=? WHERE path=?", (mtime_ns, size, path))

    def remove_notes(self, paths: list[str]) -> None:
        with self.lock, self.db:
            self.db.execute("BEGIN")
            for path in paths:
                self._delete_chunks(path)
                self.db.execute("DELETE FROM notes WHERE path=?", (path,))
                self.db.execute("DELETE FROM failures WHERE path=?", (path,))

    def record_failure(self, path: str, error: str) -> set[str]:
        """A note that cannot be indexed: drop what was indexed of it and say why. Returns the dropped
        chunk ids: their vectors must go too (the indexer deletes them after this commit)."""
        with self.lock, self.db:
            self.db.execute("BEGIN")
            dropped = {r[0] for r in self.db.execute("SELECT id FROM chunks WHERE path=?", (path,))}
            self._delete_chunks(path)
            self.db.execute("DELETE FROM notes WHERE path=?", (path,))
            self.db.execute("INSERT OR REPLACE INTO failures(path, error, at) VALUES (?,?,?)", (path, error, now_iso()))
        return dropped

    def clear_failures(self, keep: set[str]) -> None:
        with self.lock, self.db:
            self.db.execute("BEGIN")
            for (path,) in self.db.execute("SELECT path FROM failures").fetchall():
                if path not in keep:
                    self.db.execute("DELETE FROM failures WHERE path=?", (path,))

    def reset(self, signature: str | None = None) -> None:
        """Empty the catalog; with `signature`, record the settings it is now built for, in the same
        transaction (a crash leaves either the old signature, so the next start resets again, or both)."""
        with self.lock, self.db:
            self.db.execute("BEGIN")
            for table in ("notes", "chunks", "chunks_fts", "failures"):
                self.db.execute(f"DELETE FROM {table}")
            if signature is not None:
                self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('signature', ?)", (signature,))

    def _delete_chunks(self, path: str) -> None:
        rowids = [r[0] for r in self.db.execute("SELECT rowid FROM chunks WHERE path=?", (path,))]
        self.db.executemany("DELETE FROM chunks_fts WHERE rowid=?", [(r,) for r in rowids])
        self.db.execute("DELETE FROM chunks WHERE path=?", (path,))
