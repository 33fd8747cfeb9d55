"""The preference log: answers the model gave, what the user thought of them (thumbs, corrections,
A/B choices), and the DPO pairs derived from that feedback. One SQLite file.

Durability: WAL + synchronous=FULL, and every write runs on ONE writer thread in its own
BEGIN IMMEDIATE transaction; the caller blocks until COMMIT has returned, so a write that was
acknowledged survives kill -9 (and power loss). A failed write is rolled back whole and raised
as PreferenceLogError; the writer keeps serving. Reads use per-thread connections, which WAL
lets run beside the writer.

The rules for how feedback turns into pairs (one live thumb per response, re-deciding a
comparison, pairs already trained on are kept) are in pairs.py. A retried call whose
idempotency_key is already stored (one row per action and key, in `idempotency`) returns what
the first call returned and writes nothing, even when other writes came in between; the same key
with a different request (another response, value or text) is refused with IdempotencyConflict.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TypeVar

from vault_agent.feedback import pairs as pairlib
from vault_agent.feedback.db import (  # noqa: F401 - NotFound, PreferenceLogError, IdempotencyConflict: this module's API
    COMPARISON_SELECT, MISSING, IdempotencyConflict, NotFound, PreferenceLogError, Writer, connect, decode_row,
    dumps, explain, fingerprint, insert_row, is_db_failure, keyed_result, read_comparison, require_row, run_once,
)
from vault_agent.feedback.migrations import migrate
from vault_agent.feedback.pairs import new_id, normalize_question, utcnow

T = TypeVar("T")
RESPONSE_SOURCES = ("ask", "compare", "synthetic")
CHOICES = ("A", "B", "tie")


class PreferenceLog:
    """Thread-safe handle on one preference-log file. Use as a context manager or call close()."""

    def __init__(self, path: str | os.PathLike, *, busy_timeout_ms: int = 5000):
        self.path = Path(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._lock = threading.Lock()
        self._closed = False
        self._local = threading.local()
        self._readers: list[tuple[threading.Thread, sqlite3.Connection]] = []
        conn = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = connect(self.path, busy_timeout_ms)
            conn.execute("PRAGMA journal_mode = WAL")  # persistent: stored in the file
            migrate(conn)
        except (OSError, sqlite3.DatabaseError) as exc:
            if conn is not None:
                conn.close()
            raise explain(exc, self.path, "open") from exc
        self._writer = Writer(conn, self.path)

    # -- plumbing ---------------------------------------------------------------------------

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:  # no job may slip in behind close()'s stop marker
            if self._closed:
                raise PreferenceLogError(f"preference log {self.path} is closed")
            fut = self._writer.enqueue(fn)
        return fut.result()  # returns only after COMMIT: the write is durable

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = getattr(self._local, "conn", None)
        with self._lock:
            if self._closed:
                raise PreferenceLogError(f"preference log {self.path} is closed")
            if conn is None:
                # One read connection per thread; those of finished threads are closed here,
                # so a server that churns threads doesn't pile up file handles.
                for thread, old in [r for r in self._readers if not r[0].is_alive()]:
                    self._readers.remove((thread, old))
                    old.close()
                conn = self._local.conn = connect(self.path, self._busy_timeout_ms,
                                                   query_only=True)
                self._readers.append((threading.current_thread(), conn))
        try:
            conn.execute("BEGIN")  # one consistent snapshot for multi-query reads
            try:
                return fn(conn)
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
        except Exception as exc:
            if is_db_failure(exc):
                raise explain(exc, self.path, "read") from exc
            raise

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            readers, self._readers = self._readers, []
        self._writer.stop()
        for _thread, conn in readers:
            conn.close()

    def __enter__(self) -> PreferenceLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- responses --------------------------------------------------------------------------

    def record_response(self, *, question: str, prompt: str, messages: list[dict[str, Any]],
                        answer: str, retrieved: list[str], citations: Any, model_id: str,
                        adapter_version: str | None, timings: dict[str, Any],
                        source: str = "ask") -> str:
        if source not in RESPONSE_SOURCES:
            raise ValueError(f"source must be one of {', '.join(RESPONSE_SOURCES)}, not {source!r}")
        row = {
            "id": new_id("r"), "created": utcnow(), "question": question,
            "question_key": normalize_question(question), "prompt": prompt,
            "messages_json": dumps(messages), "answer": answer,
            "retrieved_json": dumps(retrieved), "citations_json": dumps(citations),
            "model_id": model_id, "adapter_version": adapter_version,
            "timings_json": dumps(timings), "source": source,
        }
        self._write(lambda conn: insert_row(conn, "responses", row))
        return row["id"]

    def get_response(self, response_id: str) -> dict[str, Any] | None:
        return self._read(lambda conn: decode_row(conn.execute(
            "SELECT * FROM responses WHERE id = ?", (response_id,)).fetchone()))

    def recent_responses(self, limit: int = 50, unrated: bool = False) -> list[dict[str, Any]]:
        """Newest first, without compare candidates that no comparison shows (discarded by the
        compare retry loop). unrated=True also leaves out responses with a live rating, a
        correction, or a place in a decided comparison."""
        sql = f"""SELECT * FROM responses s WHERE NOT {pairlib.DISCARDED_CANDIDATE} AND (:unrated = 0 OR (
            NOT EXISTS (SELECT 1 FROM ratings r WHERE r.response_id = s.id AND r.undone = 0)
            AND NOT EXISTS (SELECT 1 FROM corrections c WHERE c.response_id = s.id)
            AND NOT EXISTS (SELECT 1 FROM comparisons m WHERE m.choice IS NOT NULL
                            AND (m.response_a = s.id OR m.response_b = s.id))))
            ORDER BY s.created DESC, s.rowid DESC LIMIT :limit"""
        return self._read(lambda conn: [decode_row(r) for r in conn.execute(
            sql, {"unrated": int(unrated), "limit": limit})])

    # -- ratings and corrections ------------------------------------------------------------

    def rate(self, response_id: str, value: int, comment: str | None = None,
             idempotency_key: str | None = None) -> dict[str, Any]:
        if type(value) is not int or value not in (1, -1):
            raise ValueError(f"rating value must be 1 (thumbs up) or -1 (thumbs down), not {value!r}")

        def run(conn: sqlite3.Connection) -> dict[str, Any]:
            require_row(conn, "responses", response_id, "response")
            rating_id = pairlib.apply_rating(conn, response_id, value, comment, idempotency_key)
            return decode_row(require_row(conn, "ratings", rating_id, "rating"))

        return self._write(lambda conn: run_once(conn, "rate", idempotency_key, response_id, lambda: run(conn),
                                                 fingerprint(response_id, value, comment)))

    def get_rating(self, rating_id: str) -> dict[str, Any] | None:
        return self._read(lambda conn: decode_row(conn.execute(
            "SELECT * FROM ratings WHERE id = ?", (rating_id,)).fetchone()))

    def undo_rating(self, rating_id: str, idempotency_key: str | None = None) -> dict[str, Any]:
        """Mark a rating undone and delete its untrained pairs. Undoing twice is a no-op."""
        def run(conn: sqlite3.Connection) -> dict[str, Any]:
            if not require_row(conn, "ratings", rating_id, "rating")["undone"]:
                pairlib.undo_rating(conn, rating_id)
            return decode_row(require_row(conn, "ratings", rating_id, "rating"))

        return self._write(lambda conn: run_once(conn, "undo", idempotency_key, rating_id, lambda: run(conn),
                                                 fingerprint(rating_id)))

    def correct(self, response_id: str, text: str,
                idempotency_key: str | None = None) -> dict[str, Any]:
        """Store the user's better answer; it becomes a pair (chosen=text, rejected=answer)."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("a correction needs the corrected answer text")

        def run(conn: sqlite3.Connection) -> dict[str, Any]:
            require_row(conn, "responses", response_id, "response")
            row = {"id": new_id("cr"), "response_id": response_id, "text": text,
                   "created": utcnow(), "idempotency_key": idempotency_key}
            insert_row(conn, "corrections", row)
            pairlib.derive_correction_pair(conn, row["id"])
            return decode_row(require_row(conn, "corrections", row["id"], "correction"))

        return self._write(lambda conn: run_once(conn, "correct", idempotency_key, response_id, lambda: run(conn),
                                                 fingerprint(response_id, text)))

    # -- comparisons ------------------------------------------------------------------------

    def create_comparison(self, question: str, prompt: str, response_a: str, response_b: str,
                          idempotency_key: str | None = None,
                          reply: Callable[[dict[str, Any]], Any] | None = None, request: str | None = None) -> Any:
        """A new undecided comparison; returns it, or reply(it) when given (what a retry with
        the same idempotency_key gets back, in place of a second comparison). `request`: the
        fingerprint of what was asked (the question), checked against a reused key."""
        if response_a == response_b:
            raise ValueError("a comparison needs two different responses")

        def run(conn: sqlite3.Connection) -> Any:
            for rid in (response_a, response_b):
                require_row(conn, "responses", rid, "response")
            row = {"id": new_id("c"), "question": question, "prompt": prompt,
                   "response_a": response_a, "response_b": response_b, "created": utcnow()}
            insert_row(conn, "comparisons", row)
            made = read_comparison(conn, row["id"])
            return reply(made) if reply else made

        return self._write(lambda conn: run_once(conn, "compare", idempotency_key, None, lambda: run(conn), request))

    def keyed_result(self, action: str, key: str, request: str | None = None) -> Any:
        """The stored result of an earlier write with this idempotency key, or None;
        IdempotencyConflict when it was for another request (fingerprint)."""
        found = self._read(lambda conn: keyed_result(conn, action, key, request))
        return None if found is MISSING else found

    def choose(self, comparison_id: str, choice: str,
               idempotency_key: str | None = None) -> dict[str, Any]:
        """Decide a comparison: 'A' or 'B' makes a pair (winner over loser), 'tie' makes none.
        Choosing differently later replaces its untrained pair (pairs.decide_comparison)."""
        if choice not in CHOICES:
            raise ValueError(f"choice must be 'A', 'B' or 'tie', not {choice!r}")

        def run(conn: sqlite3.Connection) -> dict[str, Any]:
            require_row(conn, "comparisons", comparison_id, "comparison")
            pairlib.decide_comparison(conn, comparison_id, choice)
            return read_comparison(conn, comparison_id)

        return self._write(lambda conn: run_once(conn, "choose", idempotency_key, comparison_id, lambda: run(conn),
                                                 fingerprint(comparison_id, choice)))

    def get_comparison(self, comparison_id: str) -> dict[str, Any] | None:
        return self._read(lambda conn: read_comparison(conn, comparison_id))

    def pending_comparisons(self, limit: int = 50) -> list[dict[str, Any]]:
        """Undecided comparisons, newest first."""
        return self._read(lambda conn: [dict(r) for r in conn.execute(
            f"{COMPARISON_SELECT} WHERE m.choice IS NULL "
            "ORDER BY m.created DESC, m.rowid DESC LIMIT ?", (limit,))])

    # -- pairs ------------------------------------------------------------------------------

    def add_synthetic_pair(self, prompt_messages: Sequence[dict[str, str]], chosen: str,
                           rejected: str, origin_id: str) -> str | None:
        """Returns the pair id, or None when origin_id is already stored (or chosen == rejected)."""
        if not prompt_messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str) for m in prompt_messages
        ):
            raise ValueError("prompt_messages must be a non-empty list of {role, content} dicts")
        if not origin_id:
            raise ValueError("a synthetic pair needs an origin_id (what it was generated from)")
        prompt = pairlib.prompt_messages(prompt_messages)
        return self._write(lambda conn: pairlib.insert_pair(
            conn, prompt=prompt, chosen=chosen, rejected=rejected, source="synthetic",
            origin_id=origin_id))

    def pairs(self, untrained_only: bool = False) -> list[dict[str, Any]]:
        """Oldest first; each dict has prompt (a message list), chosen, rejected, source, ..."""
        where = "WHERE trained_in_version IS NULL" if untrained_only else ""
        return self._read(lambda conn: [decode_row(r) for r in conn.execute(
            f"SELECT * FROM pairs {where} ORDER BY created, rowid")])

    def untrained_by_source(self) -> dict[str, int]:
        """Pairs no version trained on yet, counted by source (what the learning view shows waiting)."""
        return self._read(lambda conn: dict(conn.execute(
            "SELECT source, count(*) FROM pairs WHERE trained_in_version IS NULL GROUP BY source")))

    def mark_trained(self, pair_ids: Iterable[str], version: str) -> int:
        """Record the adapter version that trained on these pairs; already-marked pairs keep
        their first version. Returns how many were marked now."""
        if not version:
            raise ValueError("mark_trained needs the adapter version")
        ids = [(version, pid) for pid in pair_ids]
        return self._write(lambda conn: conn.executemany(
            "UPDATE pairs SET trained_in_version = ? WHERE id = ? AND trained_in_version IS NULL",
            ids).rowcount)

    def export_pairs_jsonl(self, path: str | os.PathLike, untrained_only: bool = False) -> int:
        """Write pairs in TRL's conversational preference format; atomic (temp file + rename)."""
        rows = self.pairs(untrained_only=untrained_only)
        try:
            pairlib.write_jsonl(Path(path), (pairlib.trl_record(p) for p in rows))
        except OSError as exc:
            raise PreferenceLogError(
                f"could not export pairs to {path} ({exc.strerror or exc}); "
                f"choose a writable path with free space") from exc
        return len(rows)

    def adapter_win_rates(self) -> list[dict[str, Any]]:
        """Per adapter version ('none' = the base), its record in decided A/B comparisons."""
        return self._read(pairlib.adapter_win_rates)

    def stats(self) -> dict[str, Any]:
        """Counts for status screens. Undone ratings are left out everywhere; rated_today counts
        today's (UTC) ratings, corrections, and comparisons decided today."""
        return self._read(pairlib.feedback_stats)
