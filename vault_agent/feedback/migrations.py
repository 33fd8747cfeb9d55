"""Numbered schema migrations for the preference log (the pattern of simonw/llm's migrations).

Each migration is a small function of a sqlite3 connection. `migrate()` applies the ones not
yet recorded in `_migrations`, in list order, each in its own transaction together with its
record, so a crash leaves the schema at a clean step. Never edit a migration that has shipped:
append a new one. Each uses IF NOT EXISTS, so re-running one is harmless.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from typing import Callable

MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = []


def migration(fn: Callable[[sqlite3.Connection], None]) -> Callable[[sqlite3.Connection], None]:
    MIGRATIONS.append(fn)
    return fn


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Apply pending migrations; return the names applied now. `conn` must be in autocommit
    mode (isolation_level=None) because we manage the transactions ourselves."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    # Cheap check first: opening an up-to-date log should take no write lock at all.
    if _applied(conn) >= {fn.__name__ for fn in MIGRATIONS}:
        return []
    applied_now = []
    for fn in MIGRATIONS:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-check under the write lock: another process may have just migrated.
            if fn.__name__ not in _applied(conn):
                fn(conn)
                conn.execute(
                    "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)",
                    (fn.__name__, datetime.now(timezone.utc).isoformat()),
                )
                applied_now.append(fn.__name__)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    return applied_now


def _applied(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT name FROM _migrations")}


@migration
def m001_initial(db: sqlite3.Connection) -> None:
    # question_key (normalized question) lets thumbs on different answers to the same
    # question find each other through an index.
    db.execute(
        """CREATE TABLE IF NOT EXISTS responses (
            id TEXT PRIMARY KEY,
            created TEXT NOT NULL,
            question TEXT NOT NULL,
            question_key TEXT NOT NULL,
            prompt TEXT NOT NULL,
            messages_json TEXT NOT NULL,
            answer TEXT NOT NULL,
            retrieved_json TEXT NOT NULL,
            citations_json TEXT NOT NULL,
            model_id TEXT NOT NULL,
            adapter_version TEXT,
            timings_json TEXT NOT NULL,
            source TEXT NOT NULL CHECK (source IN ('ask', 'compare', 'synthetic'))
        )"""
    )
    db.execute("CREATE INDEX IF NOT EXISTS responses_created ON responses (created)")
    db.execute("CREATE INDEX IF NOT EXISTS responses_question_key ON responses (question_key)")


@migration
def m002_ratings(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE IF NOT EXISTS ratings (
            id TEXT PRIMARY KEY,
            response_id TEXT NOT NULL REFERENCES responses (id),
            value INTEGER NOT NULL CHECK (value IN (1, -1)),
            comment TEXT,
            created TEXT NOT NULL,
            idempotency_key TEXT UNIQUE,
            undone INTEGER NOT NULL DEFAULT 0 CHECK (undone IN (0, 1))
        )"""
    )
    db.execute("CREATE INDEX IF NOT EXISTS ratings_response ON ratings (response_id)")


@migration
def m003_corrections(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE IF NOT EXISTS corrections (
            id TEXT PRIMARY KEY,
            response_id TEXT NOT NULL REFERENCES responses (id),
            text TEXT NOT NULL,
            created TEXT NOT NULL,
            idempotency_key TEXT UNIQUE
        )"""
    )
    db.execute("CREATE INDEX IF NOT EXISTS corrections_response ON corrections (response_id)")


@migration
def m004_comparisons(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE IF NOT EXISTS comparisons (
            id TEXT PRIMARY KEY,
            question TEXT NOT NULL,
            prompt TEXT NOT NULL,
            response_a TEXT NOT NULL REFERENCES responses (id),
            response_b TEXT NOT NULL REFERENCES responses (id),
            created TEXT NOT NULL,
            choice TEXT CHECK (choice IS NULL OR choice IN ('A', 'B', 'tie')),
            chosen_at TEXT,
            idempotency_key TEXT UNIQUE
        )"""
    )
    db.execute("CREATE INDEX IF NOT EXISTS comparisons_a ON comparisons (response_a)")
    db.execute("CREATE INDEX IF NOT EXISTS comparisons_b ON comparisons (response_b)")


@migration
def m005_pairs(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE IF NOT EXISTS pairs (
            id TEXT PRIMARY KEY,
            prompt_json TEXT NOT NULL,
            chosen TEXT NOT NULL,
            rejected TEXT NOT NULL,
            source TEXT NOT NULL
                CHECK (source IN ('comparison', 'correction', 'rating', 'synthetic')),
            origin_id TEXT NOT NULL,
            created TEXT NOT NULL,
            trained_in_version TEXT,
            UNIQUE (source, origin_id)
        )"""
    )
    db.execute("CREATE INDEX IF NOT EXISTS pairs_trained ON pairs (trained_in_version)")


@migration
def m006_idempotency(db: sqlite3.Connection) -> None:
    # One row per (action, key): a retry finds the result it got the first time and changes
    # nothing. (Before this, a comparison kept only its last key, so a late retry of an older
    # choice could undo a newer one.) Keys already stored move here; their result is read from
    # the row they point to (result_json NULL).
    db.execute(
        """CREATE TABLE IF NOT EXISTS idempotency (
            action TEXT NOT NULL,
            key TEXT NOT NULL,
            target_id TEXT,
            result_json TEXT,
            created TEXT NOT NULL,
            PRIMARY KEY (action, key)
        )"""
    )
    for action, table in (("rate", "ratings"), ("correct", "corrections"), ("choose", "comparisons")):
        db.execute(
            f"""INSERT OR IGNORE INTO idempotency (action, key, target_id, result_json, created)
                SELECT ?, idempotency_key, id, NULL, created FROM {table}
                WHERE idempotency_key IS NOT NULL""",
            (action,),
        )


@migration
def m007_comparisons_without_idempotency_key(db: sqlite3.Connection) -> None:
    # Since m006 keys live in `idempotency`; comparisons.idempotency_key was no longer written.
    # SQLite cannot drop a UNIQUE column, so the table is rebuilt without it (rows kept as they are).
    if "idempotency_key" not in {row[1] for row in db.execute("PRAGMA table_info(comparisons)")}:
        return
    db.execute(
        """CREATE TABLE comparisons_new (
            id TEXT PRIMARY KEY,
            question TEXT NOT NULL,
            prompt TEXT NOT NULL,
            response_a TEXT NOT NULL REFERENCES responses (id),
            response_b TEXT NOT NULL REFERENCES responses (id),
            created TEXT NOT NULL,
            choice TEXT CHECK (choice IS NULL OR choice IN ('A', 'B', 'tie')),
            chosen_at TEXT
        )"""
    )
    columns = "id, question, prompt, response_a, response_b, created, choice, chosen_at"
    # rowid kept too: the pending list breaks ties on created by rowid
    db.execute(f"INSERT INTO comparisons_new (rowid, {columns}) SELECT rowid, {columns} FROM comparisons")
    db.execute("DROP TABLE comparisons")
    db.execute("ALTER TABLE comparisons_new RENAME TO comparisons")
    db.execute("CREATE INDEX IF NOT EXISTS comparisons_a ON comparisons (response_a)")
    db.execute("CREATE INDEX IF NOT EXISTS comparisons_b ON comparisons (response_b)")


@migration
def m008_idempotency_fingerprint(db: sqlite3.Connection) -> None:
    # What the first call with a key asked for (a hash of its request): a retry must ask the same,
    # a different request under a used key is refused (409) instead of answered with the first's
    # result. Keys stored before this have none and are not checked.
    if "fingerprint" not in {row[1] for row in db.execute("PRAGMA table_info(idempotency)")}:
        db.execute("ALTER TABLE idempotency ADD COLUMN fingerprint TEXT")
