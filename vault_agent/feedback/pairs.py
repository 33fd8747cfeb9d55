"""Turning feedback into DPO preference pairs, plus the id/time helpers the store shares.

The functions that take a connection run inside the writer's open transaction, so feedback
and the pairs derived from it commit (or roll back) together. The rules:
- A thumbs-up and a thumbs-down (both live) on two different answers to the same question
  (normalize_question) make a 'rating' pair, origin_id "<up rating id>:<down rating id>".
- A response has at most one live thumb. Rating it again with the same value keeps the live
  rating (its comment updated if a new one is given); the opposite value replaces it: the old
  rating is marked undone and its untrained pairs are dropped, as undo does.
- A correction makes a 'correction' pair: chosen = the user's text, rejected = the answer.
- A decided comparison makes a 'comparison' pair, winner over loser; a tie makes none.
  Re-deciding it differently replaces its untrained pair ('tie' just drops it).
- A pair that a training run already used (trained_in_version set) is never deleted: it records
  what an adapter learned from. So re-deciding a comparison whose pair was trained on makes no
  new pair (origin_id is unique per source).
- Identical chosen and rejected texts carry no preference: no pair.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

PAIR_SOURCES = ("comparison", "correction", "rating", "synthetic")


# A 'compare' response that belongs to no comparison is a candidate the compare retry loop threw
# away (or one whose comparison was never saved): nobody saw it, so it is neither in the rating
# queue nor in the counts.
DISCARDED_CANDIDATE = """(s.source = 'compare' AND NOT EXISTS (SELECT 1 FROM comparisons m
    WHERE m.response_a = s.id OR m.response_b = s.id))"""


def rating_in_origin(rating_id_sql: str) -> str:
    """SQL: is this rating one of the two in a rating pair's origin_id ("<up id>:<down id>")?
    instr() rather than LIKE, which would read the '_' in our ids as a wildcard."""
    return f"instr(':' || origin_id || ':', ':' || {rating_id_sql} || ':') > 0"


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(9)}"


def utcnow() -> str:
    # Fixed-width ISO-8601 UTC, so string order is time order.
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def normalize_question(question: str) -> str:
    """The key under which answers count as answers to 'the same question'."""
    return " ".join(question.split()).casefold()


def prompt_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """The prompt half of a chat: every message but the assistant's (the answers are compared)."""
    return [
        {"role": m["role"], "content": m["content"]}
        for m in messages
        if m.get("role") != "assistant"
    ]


def trl_record(pair: dict[str, Any]) -> dict[str, Any]:
    """TRL's conversational preference format."""
    return {
        "prompt": pair["prompt"],
        "chosen": [{"role": "assistant", "content": pair["chosen"]}],
        "rejected": [{"role": "assistant", "content": pair["rejected"]}],
    }


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Write to a temp file beside `path`, fsync, rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def insert_pair(
    conn: sqlite3.Connection,
    *,
    prompt: list[dict[str, str]],
    chosen: str,
    rejected: str,
    source: str,
    origin_id: str,
) -> str | None:
    """Insert a pair; None when it carries no preference (identical answers) or already exists."""
    if chosen.strip() == rejected.strip():
        return None
    pair_id = new_id("p")
    # ON CONFLICT on the unique key only; INSERT OR IGNORE would also swallow CHECK failures.
    cur = conn.execute(
        """INSERT INTO pairs (id, prompt_json, chosen, rejected, source, origin_id, created)
           VALUES (?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (source, origin_id) DO NOTHING""",
        (pair_id, json.dumps(prompt, ensure_ascii=False), chosen, rejected, source, origin_id,
         utcnow()),
    )
    return pair_id if cur.rowcount == 1 else None


def derive_rating_pairs(conn: sqlite3.Connection, rating_id: str) -> list[str]:
    """Pair a live thumb with every live opposite thumb on another answer to the same question.

    The prompt is the thumbs-up response's: the preferred answer was written for that context.
    """
    me = conn.execute(
        """SELECT r.id AS rating_id, r.value, s.id AS response_id, s.question_key, s.answer,
                  s.messages_json
           FROM ratings r JOIN responses s ON s.id = r.response_id WHERE r.id = ?""",
        (rating_id,),
    ).fetchone()
    others = conn.execute(
        """SELECT r.id AS rating_id, s.answer, s.messages_json
           FROM ratings r JOIN responses s ON s.id = r.response_id
           WHERE r.undone = 0 AND r.value = ? AND s.question_key = ? AND s.id != ?
           ORDER BY r.created, r.rowid""",
        (-me["value"], me["question_key"], me["response_id"]),
    ).fetchall()
    made = []
    for other in others:
        up, down = (me, other) if me["value"] == 1 else (other, me)
        pair_id = insert_pair(
            conn,
            prompt=prompt_messages(json.loads(up["messages_json"])),
            chosen=up["answer"],
            rejected=down["answer"],
            source="rating",
            origin_id=f"{up['rating_id']}:{down['rating_id']}",
        )
        if pair_id:
            made.append(pair_id)
    return made


def undo_rating(conn: sqlite3.Connection, rating_id: str) -> None:
    """Mark a rating undone and drop its derived pairs, unless a training run already used them
    (those stay: they record what an adapter was trained on)."""
    conn.execute("UPDATE ratings SET undone = 1 WHERE id = ?", (rating_id,))
    conn.execute(
        f"""DELETE FROM pairs WHERE source = 'rating' AND trained_in_version IS NULL
            AND {rating_in_origin("?")}""",
        (rating_id,),
    )


def derive_correction_pair(conn: sqlite3.Connection, correction_id: str) -> str | None:
    row = conn.execute(
        """SELECT c.text, s.answer, s.messages_json FROM corrections c
           JOIN responses s ON s.id = c.response_id WHERE c.id = ?""",
        (correction_id,),
    ).fetchone()
    return insert_pair(
        conn,
        prompt=prompt_messages(json.loads(row["messages_json"])),
        chosen=row["text"],
        rejected=row["answer"],
        source="correction",
        origin_id=correction_id,
    )


def apply_rating(conn: sqlite3.Connection, response_id: str, value: int, comment: str | None,
                 idempotency_key: str | None) -> str:
    """Store a thumb on an existing response under the one-live-thumb rule; return its id."""
    live = conn.execute("SELECT id, value FROM ratings WHERE response_id = ? AND undone = 0",
                        (response_id,)).fetchall()
    for old in live:
        if old["value"] == value:  # the same thumb again: keep it, refresh the comment
            if comment is not None:
                conn.execute("UPDATE ratings SET comment = ? WHERE id = ?", (comment, old["id"]))
            return old["id"]
        undo_rating(conn, old["id"])  # the user changed their mind
    rating_id = new_id("rt")
    conn.execute(
        """INSERT INTO ratings (id, response_id, value, comment, created, idempotency_key)
           VALUES (?, ?, ?, ?, ?, ?)""",
        (rating_id, response_id, value, comment, utcnow(), idempotency_key),
    )
    derive_rating_pairs(conn, rating_id)
    return rating_id


def decide_comparison(conn: sqlite3.Connection, comparison_id: str, choice: str) -> None:
    """Set an existing comparison's choice and its pair; the same choice again changes nothing."""
    current = conn.execute("SELECT choice FROM comparisons WHERE id = ?",
                           (comparison_id,)).fetchone()
    if current["choice"] == choice:
        return
    conn.execute(
        """DELETE FROM pairs WHERE source = 'comparison' AND origin_id = ?
           AND trained_in_version IS NULL""",
        (comparison_id,),
    )
    # Idempotency keys live in their own table (one row per key), not on the comparison.
    conn.execute("UPDATE comparisons SET choice = ?, chosen_at = ? WHERE id = ?",
                 (choice, utcnow(), comparison_id))
    derive_comparison_pair(conn, comparison_id)


def derive_comparison_pair(conn: sqlite3.Connection, comparison_id: str) -> str | None:
    """Winner over loser for a decided A/B comparison; no pair for a tie."""
    comp = conn.execute(
        "SELECT response_a, response_b, choice FROM comparisons WHERE id = ?", (comparison_id,)
    ).fetchone()
    if comp["choice"] not in ("A", "B"):
        return None
    win_id, lose_id = comp["response_a"], comp["response_b"]
    if comp["choice"] == "B":
        win_id, lose_id = lose_id, win_id
    winner, loser = (
        conn.execute("SELECT answer, messages_json FROM responses WHERE id = ?", (rid,)).fetchone()
        for rid in (win_id, lose_id)
    )
    return insert_pair(
        conn,
        prompt=prompt_messages(json.loads(winner["messages_json"])),
        chosen=winner["answer"],
        rejected=loser["answer"],
        source="comparison",
        origin_id=comparison_id,
    )


def adapter_win_rates(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Per adapter version ('none' = the base), how it fared in decided comparisons against another
    version: the user's verdict on each promotion. A tie counts half a win."""
    rows = conn.execute(
        """SELECT coalesce(a.adapter_version, 'none'), coalesce(b.adapter_version, 'none'), m.choice
           FROM comparisons m JOIN responses a ON a.id = m.response_a JOIN responses b ON b.id = m.response_b
           WHERE m.choice IS NOT NULL AND coalesce(a.adapter_version, '') != coalesce(b.adapter_version, '')""")
    tally: dict[str, dict[str, int]] = {}
    for va, vb, choice in rows:
        for me, side in ((va, "A"), (vb, "B")):
            t = tally.setdefault(me, {"won": 0, "lost": 0, "tied": 0})
            t["tied" if choice == "tie" else "won" if choice == side else "lost"] += 1
    out = []
    for version, t in sorted(tally.items()):
        decided = t["won"] + t["lost"] + t["tied"]
        out.append({"version": version, **t, "decided": decided,
                    "win_rate": round((t["won"] + 0.5 * t["tied"]) / decided, 3)})
    return out


def feedback_stats(conn: sqlite3.Connection) -> dict[str, Any]:
    """Counts for status screens. Undone ratings are left out everywhere; rated_today counts
    today's (UTC) ratings, corrections, and comparisons decided (chosen_at) today."""
    def one(sql: str, params: Any = ()) -> int:
        return conn.execute(sql, params).fetchone()[0]

    by_source = dict.fromkeys(PAIR_SOURCES, 0)
    by_source.update(conn.execute("SELECT source, count(*) FROM pairs GROUP BY source"))
    return {
        "responses": one(f"SELECT count(*) FROM responses s WHERE NOT {DISCARDED_CANDIDATE}"),
        "ratings": {
            "up": one("SELECT count(*) FROM ratings WHERE undone = 0 AND value = 1"),
            "down": one("SELECT count(*) FROM ratings WHERE undone = 0 AND value = -1"),
        },
        "unpaired_thumbs": one(
            f"""SELECT count(*) FROM ratings r WHERE r.undone = 0 AND NOT EXISTS (
                SELECT 1 FROM pairs WHERE source = 'rating' AND {rating_in_origin("r.id")})"""
        ),
        "corrections": one("SELECT count(*) FROM corrections"),
        "comparisons": {
            "decided": one("SELECT count(*) FROM comparisons WHERE choice IS NOT NULL"),
            "pending": one("SELECT count(*) FROM comparisons WHERE choice IS NULL"),
        },
        "pairs": by_source,
        "pairs_total": sum(by_source.values()),
        "pairs_untrained": one("SELECT count(*) FROM pairs WHERE trained_in_version IS NULL"),
        "adapter_win_rates": adapter_win_rates(conn),
        "rated_today": one(
            """SELECT (SELECT count(*) FROM ratings
                       WHERE undone = 0 AND substr(created, 1, 10) = :d)
                    + (SELECT count(*) FROM corrections WHERE substr(created, 1, 10) = :d)
                    + (SELECT count(*) FROM comparisons
                       WHERE choice IS NOT NULL AND substr(chosen_at, 1, 10) = :d)""",
            {"d": utcnow()[:10]},
        ),
    }
