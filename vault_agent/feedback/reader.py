"""Read-only queries on the preference log, for readers outside the daemon (training, benchmarks).

Each query opens the file read-only for its one statement: a retrain reads the log while the
daemon's writer keeps writing (WAL lets both run), and nothing here can change it. A log or
table that does not exist yet reads as empty. Parsing the rows into training data is the
reader's caller's job (train/dataset.py, train/examples.py); the SQL is all here.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from vault_agent.feedback.db import PreferenceLogError
from vault_agent.feedback.pairs import rating_in_origin


def _rows(db_path: Path, sql: str) -> list[sqlite3.Row]:
    if not Path(db_path).exists():
        return []
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise PreferenceLogError(f"cannot read the preference log {db_path}: {exc}") from None
    finally:
        conn.close()


def pair_rows(db_path: Path) -> list[sqlite3.Row]:
    """Every pair (all columns), oldest first."""
    return _rows(db_path, "SELECT * FROM pairs ORDER BY created, rowid")


def thumb_rows(db_path: Path) -> list[sqlite3.Row]:
    """Live thumbs that no 'rating' pair carries, oldest first, with their response's answer and
    messages: id, value, created, response_id, answer, messages_json. A response may appear
    more than once (the caller keeps the latest)."""
    return _rows(db_path, f"""SELECT r.id, r.value, r.created, r.response_id, s.answer, s.messages_json
        FROM ratings r JOIN responses s ON s.id = r.response_id
        WHERE r.undone = 0 AND NOT EXISTS (SELECT 1 FROM pairs WHERE source = 'rating' AND {rating_in_origin("r.id")})
        ORDER BY r.created, r.rowid""")
