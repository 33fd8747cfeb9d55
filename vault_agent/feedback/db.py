"""SQLite plumbing of the preference log: connections, the single writer thread, row helpers,
idempotency records, and turning SQLite failures into one-line errors. The log's operations are
in store.py; the rules for pairs in pairs.py.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import queue
import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable, TypeVar

from vault_agent.errors import UserError
from vault_agent.feedback.pairs import utcnow

T = TypeVar("T")


class PreferenceLogError(UserError):
    """Reading or writing the preference log failed; nothing partial was saved."""

    http_status = 503  # the client did nothing wrong: a locked log frees in seconds, retrying is harmless
    retry_after = 2


class NotFound(UserError):
    """No response, rating or comparison with that id."""

    http_status = 404


class IdempotencyConflict(UserError):
    """An idempotency key reused for a different request: retrying it can't be what the client meant."""

    http_status = 409


def fingerprint(*request: Any) -> str:
    """A stable hash of what a keyed write asked for (its target and values)."""
    return hashlib.sha256(dumps(list(request)).encode()).hexdigest()


def explain(exc: BaseException, path: Path, doing: str) -> PreferenceLogError:
    """One line that says what went wrong and what to do about it."""
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        msg = (f"preference log {path} is locked by another process; close other vault-agent "
               f"instances or tools that hold it open, then retry")
    elif "full" in text or getattr(exc, "errno", None) == 28:
        msg = f"disk is full, could not {doing} preference log {path}; free some space, then retry"
    elif "readonly" in text or "read-only" in text or isinstance(exc, PermissionError):
        msg = (f"preference log {path} is read-only; make the file and its folder writable, "
               f"then retry")
    elif "not a database" in text or "malformed" in text:
        msg = (f"preference log {path} is damaged ({exc}); move it aside and restart to begin "
               f"a new one")
    else:
        msg = f"could not {doing} preference log {path} ({exc}); nothing was saved, retry"
    return PreferenceLogError(msg.replace("\n", " "))


def is_db_failure(exc: BaseException) -> bool:
    # Integrity/programming errors are our bugs; let them surface as they are.
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(
        exc, (sqlite3.IntegrityError, sqlite3.ProgrammingError)
    )


def connect(path: Path, busy_timeout_ms: int, *, query_only: bool = False) -> sqlite3.Connection:
    # isolation_level=None: no implicit transactions, we issue BEGIN/COMMIT ourselves.
    # check_same_thread=False: close() may close a connection from another thread.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                           timeout=busy_timeout_ms / 1000)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = FULL")
    if query_only:
        conn.execute("PRAGMA query_only = ON")
    return conn


def insert_row(conn: sqlite3.Connection, table: str, row: dict[str, Any]) -> None:
    cols = ", ".join(row)
    marks = ", ".join("?" * len(row))
    conn.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", tuple(row.values()))


def require_row(conn: sqlite3.Connection, table: str, row_id: str, what: str) -> sqlite3.Row:
    row = conn.execute(f"SELECT * FROM {table} WHERE id = ?", (row_id,)).fetchone()
    if row is None:
        raise NotFound(f"no {what} with id {row_id!r} in the preference log; check the id")
    return row


# For keys stored before the idempotency table (result_json NULL): the row they point to.
_LEGACY_RESULT: dict[str, Callable[[sqlite3.Connection, str], Any]] = {
    "rate": lambda conn, rid: decode_row(conn.execute("SELECT * FROM ratings WHERE id = ?", (rid,)).fetchone()),
    "correct": lambda conn, cid: decode_row(conn.execute("SELECT * FROM corrections WHERE id = ?",
                                                      (cid,)).fetchone()),
    "choose": lambda conn, mid: read_comparison(conn, mid),
}
MISSING = object()


def keyed_result(conn: sqlite3.Connection, action: str, key: str | None, request: str | None = None) -> Any:
    """What the first call with this key returned, or MISSING. IdempotencyConflict when that call
    asked for something else than `request` (a fingerprint)."""
    if key is None:
        return MISSING
    row = conn.execute("SELECT target_id, result_json, fingerprint FROM idempotency WHERE action = ? AND key = ?",
                       (action, key)).fetchone()
    if row is None:
        return MISSING
    if request is not None and row["fingerprint"] is not None and row["fingerprint"] != request:
        raise IdempotencyConflict(f"Idempotency-Key {key.rsplit(':', 1)[0] if action in ('rate', 'correct') else key!r} "
                                  f"was already used for a different {action} request; a retry must repeat "
                                  "the first request exactly, a new request needs a new key")
    if row["result_json"] is None:
        return _LEGACY_RESULT[action](conn, row["target_id"])
    return json.loads(row["result_json"])


def run_once(conn: sqlite3.Connection, action: str, key: str | None, target_id: str | None,
             run: Callable[[], T], request: str | None = None) -> T:
    """Run a write at most once per (action, key), inside the caller's transaction: a retry gets
    the first call's result back and changes nothing, however many other writes came between;
    the same key with another request (fingerprint) gets IdempotencyConflict."""
    prior = keyed_result(conn, action, key, request)
    if prior is not MISSING:
        return prior
    result = run()
    if key is not None:
        conn.execute("INSERT INTO idempotency (action, key, target_id, result_json, created, fingerprint) "
                     "VALUES (?, ?, ?, ?, ?, ?)", (action, key, target_id, dumps(result), utcnow(), request))
    return result


def decode_row(row: sqlite3.Row | None) -> dict[str, Any] | None:
    """Row -> dict with JSON columns decoded and their _json suffix dropped."""
    if row is None:
        return None
    out = {k.removesuffix("_json"): json.loads(row[k]) if k.endswith("_json") else row[k]
           for k in row.keys() if k != "question_key"}
    if "undone" in out:
        out["undone"] = bool(out["undone"])
    return out


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


# Comparisons come back with both answers, so a client can show one without more calls.
COMPARISON_SELECT = """SELECT m.*, a.answer AS answer_a, b.answer AS answer_b
    FROM comparisons m JOIN responses a ON a.id = m.response_a
    JOIN responses b ON b.id = m.response_b"""


def read_comparison(conn: sqlite3.Connection, comparison_id: str) -> dict[str, Any] | None:
    row = conn.execute(f"{COMPARISON_SELECT} WHERE m.id = ?", (comparison_id,)).fetchone()
    return dict(row) if row else None


class Writer:
    """The single writer thread: runs queued fn(conn) jobs, each in its own transaction."""

    def __init__(self, conn: sqlite3.Connection, path: Path):
        self._conn, self._path = conn, path
        self._jobs: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="preference-log-writer",
                                        daemon=True)
        self._thread.start()

    def enqueue(self, fn: Callable[[sqlite3.Connection], T]) -> concurrent.futures.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((fn, fut))
        return fut

    def stop(self) -> None:
        self._jobs.put(None)  # jobs queued before this still run
        self._thread.join()

    def _run(self) -> None:
        conn = self._conn
        while (job := self._jobs.get()) is not None:
            fn, fut = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                conn.execute("BEGIN IMMEDIATE")
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException as exc:  # the thread must survive any one failed write
                with contextlib.suppress(sqlite3.Error):
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                if is_db_failure(exc):
                    err = explain(exc, self._path, "write")
                    err.__cause__ = exc  # keep the sqlite error for debugging
                    exc = err
                fut.set_exception(exc)
            else:
                fut.set_result(result)
        conn.close()
