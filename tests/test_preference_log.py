"""The preference log against a real SQLite file: schema, pairs, idempotency, failures, durability."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from vault_agent.errors import UserError
from vault_agent.feedback import migrations
from vault_agent.feedback.store import NotFound, PreferenceLog, PreferenceLogError

REPO = Path(__file__).resolve().parents[1]
SYSTEM = {"role": "system", "content": "Answer from the numbered notes."}


def user(question: str) -> dict[str, str]:
    return {"role": "user", "content": f"[1] notes...\n\nQuestion: {question}"}


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "preferences.sqlite3"


@pytest.fixture
def log(db_path: Path):
    with PreferenceLog(db_path) as store:
        yield store


def respond(log: PreferenceLog, question: str, answer: str, **overrides) -> str:
    fields = dict(
        question=question,
        prompt=f"SYSTEM ... Question: {question}",
        messages=[SYSTEM, user(question), {"role": "assistant", "content": answer}],
        answer=answer,
        retrieved=["note.md#0", "note.md#1"],
        citations=[{"n": 1, "chunk": "note.md#0"}],
        model_id="smollm2-135m",
        adapter_version=None,
        timings={"retrieve_ms": 3.0, "generate_ms": 120.5},
    )
    fields.update(overrides)
    return log.record_response(**fields)


def raw(db_path: Path) -> sqlite3.Connection:
    return sqlite3.connect(db_path, isolation_level=None)


def count(db_path: Path, table: str) -> int:
    with raw(db_path) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


# -- schema -----------------------------------------------------------------------------------

def test_migrations_run_once_and_reopening_is_a_no_op(db_path: Path):
    PreferenceLog(db_path).close()
    conn = raw(db_path)
    names = [fn.__name__ for fn in migrations.MIGRATIONS]
    first = conn.execute("SELECT name, applied_at FROM _migrations ORDER BY name").fetchall()
    assert [n for n, _ in first] == sorted(names)
    assert names[0] == "m001_initial" and names == sorted(names)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert migrations.migrate(conn) == []  # nothing left to apply
    conn.close()

    with PreferenceLog(db_path) as again:
        respond(again, "q", "a")
    with raw(db_path) as conn:
        assert conn.execute("SELECT name, applied_at FROM _migrations ORDER BY name").fetchall() \
            == first


def test_pending_migrations_apply_on_open(db_path: Path):
    db_path.parent.mkdir(parents=True)
    conn = raw(db_path)
    conn.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    migrations.m001_initial(conn)  # an "older" log that only knows about responses
    conn.execute("INSERT INTO _migrations VALUES ('m001_initial', '2026-01-01T00:00:00+00:00')")
    conn.close()

    with PreferenceLog(db_path) as log:
        rid = respond(log, "q", "a")
        log.rate(rid, 1)  # the ratings table came from a migration applied on open
    with raw(db_path) as conn:
        rows = dict(conn.execute("SELECT name, applied_at FROM _migrations"))
    assert set(rows) == {fn.__name__ for fn in migrations.MIGRATIONS}
    assert rows["m001_initial"].startswith("2026-01-01")


def test_each_migration_is_idempotent(tmp_path: Path):
    conn = raw(tmp_path / "m.sqlite3")
    for fn in migrations.MIGRATIONS:
        fn(conn)
        fn(conn)  # a half-recorded earlier run must not wedge startup
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"responses", "ratings", "corrections", "comparisons", "pairs"} <= tables
    conn.close()


# -- responses --------------------------------------------------------------------------------

def test_record_and_read_back_a_response(log: PreferenceLog):
    rid = respond(log, "What is X?", "X is Y [1].", adapter_version="v0003")
    got = log.get_response(rid)
    assert got["question"] == "What is X?"
    assert got["answer"] == "X is Y [1]."
    assert got["messages"][-1] == {"role": "assistant", "content": "X is Y [1]."}
    assert got["retrieved"] == ["note.md#0", "note.md#1"]
    assert got["citations"] == [{"n": 1, "chunk": "note.md#0"}]
    assert got["timings"]["generate_ms"] == 120.5
    assert got["adapter_version"] == "v0003" and got["source"] == "ask"
    assert got["created"].endswith("+00:00")
    assert log.get_response("r_missing") is None


def test_recent_responses_newest_first_and_unrated_filter(log: PreferenceLog):
    ids = [respond(log, f"q{i}", f"a{i}") for i in range(5)]
    assert [r["id"] for r in log.recent_responses()] == ids[::-1]
    assert [r["id"] for r in log.recent_responses(limit=2)] == ids[:2:-1]

    log.rate(ids[0], 1)
    log.correct(ids[1], "better")
    comp = log.create_comparison("q", "p", ids[2], ids[3])
    assert ids[2] in [r["id"] for r in log.recent_responses(unrated=True)]  # still pending
    log.choose(comp["id"], "tie")
    assert [r["id"] for r in log.recent_responses(unrated=True)] == [ids[4]]

    undone = log.rate(ids[4], -1)
    log.undo_rating(undone["id"])
    assert [r["id"] for r in log.recent_responses(unrated=True)] == [ids[4]]


# -- ratings ----------------------------------------------------------------------------------

def test_opposite_thumbs_on_the_same_question_make_a_pair(log: PreferenceLog):
    good = respond(log, "What is the capital of France?", "Paris [1].")
    bad = respond(log, "  what is the CAPITAL of france? ", "Lyon.")
    other = respond(log, "Something else?", "Nope.")

    up = log.rate(good, 1, comment="right")
    assert log.pairs() == []  # one thumb alone is not a preference
    log.rate(other, -1)  # different question: never paired
    down = log.rate(bad, -1)

    (pair,) = log.pairs()
    assert pair["source"] == "rating"
    assert pair["chosen"] == "Paris [1]." and pair["rejected"] == "Lyon."
    assert pair["origin_id"] == f"{up['id']}:{down['id']}"
    assert pair["prompt"] == [SYSTEM, user("What is the capital of France?")]
    assert pair["trained_in_version"] is None
    assert up["value"] == 1 and up["comment"] == "right" and up["undone"] is False

    stats = log.stats()
    assert stats["ratings"] == {"up": 1, "down": 2}
    assert stats["unpaired_thumbs"] == 1  # the thumb on "Something else?"
    assert stats["pairs"]["rating"] == 1 and stats["pairs_untrained"] == 1


def test_rerating_a_response_replaces_its_thumb(log: PreferenceLog):
    a = respond(log, "q", "answer a")
    b = respond(log, "q", "answer b")
    first = log.rate(a, 1)
    log.rate(b, -1)
    again = log.rate(a, 1, comment="still good")
    assert again["id"] == first["id"] and again["comment"] == "still good"
    assert len(log.pairs()) == 1

    flipped = log.rate(a, -1)  # changed their mind: no live up left, so no pair
    assert log.get_rating(first["id"])["undone"] is True
    assert flipped["value"] == -1
    assert log.pairs() == []
    assert log.stats()["ratings"] == {"up": 0, "down": 2}


def test_undo_removes_derived_pair_unless_trained(log: PreferenceLog):
    a = respond(log, "q", "good")
    b = respond(log, "q", "bad")
    c = respond(log, "q", "worse")
    up = log.rate(a, 1)
    log.rate(b, -1)
    log.rate(c, -1)
    assert len(log.pairs()) == 2

    trained = [p["id"] for p in log.pairs() if p["rejected"] == "worse"]
    assert log.mark_trained(trained, "v0001") == 1
    assert log.mark_trained(trained, "v0002") == 0  # keeps the first version

    undone = log.undo_rating(up["id"])
    assert undone["undone"] is True
    assert [p["id"] for p in log.pairs()] == trained  # trained-on pairs are history
    assert log.pairs()[0]["trained_in_version"] == "v0001"
    assert log.undo_rating(up["id"])["undone"] is True  # undo twice: no-op
    assert log.stats()["ratings"] == {"up": 0, "down": 2}


def test_idempotent_rating_is_recorded_once(log: PreferenceLog):
    rid = respond(log, "q", "a")
    first = log.rate(rid, 1, comment="x", idempotency_key="key-1")
    again = log.rate(rid, 1, comment="x", idempotency_key="key-1")
    assert again == first
    assert count(log.path, "ratings") == 1


def test_idempotent_rating_from_8_threads_at_once(log: PreferenceLog):
    a = respond(log, "q", "good")
    b = respond(log, "q", "bad")
    log.rate(b, -1)
    barrier = threading.Barrier(8)
    results, errors = [], []

    def worker():
        try:
            barrier.wait()
            results.append(log.rate(a, 1, idempotency_key="same-click"))
        except Exception as exc:  # pragma: no cover - shown by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len({r["id"] for r in results}) == 1 and len(results) == 8
    assert count(log.path, "ratings") == 2
    assert len(log.pairs()) == 1


def test_concurrent_writers_all_land(log: PreferenceLog):
    def worker(n):
        for i in range(20):
            respond(log, f"q{n}-{i}", "a")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert log.stats()["responses"] == 160


# -- corrections ------------------------------------------------------------------------------

def test_correction_makes_a_pair_without_the_assistant_message(log: PreferenceLog):
    rid = respond(log, "Who wrote it?", "Bob.")
    corr = log.correct(rid, "Alice wrote it [2].", idempotency_key="c-1")
    assert corr["response_id"] == rid and corr["text"] == "Alice wrote it [2]."
    (pair,) = log.pairs()
    assert pair["source"] == "correction" and pair["origin_id"] == corr["id"]
    assert pair["chosen"] == "Alice wrote it [2]." and pair["rejected"] == "Bob."
    assert pair["prompt"] == [SYSTEM, user("Who wrote it?")]

    assert log.correct(rid, "Alice wrote it [2].", idempotency_key="c-1") == corr
    assert count(log.path, "corrections") == 1 and len(log.pairs()) == 1
    assert log.stats()["corrections"] == 1


# -- comparisons ------------------------------------------------------------------------------

def test_comparison_choice_makes_replaces_and_drops_pairs(log: PreferenceLog):
    a = respond(log, "q", "answer A", source="compare", adapter_version="v0002")
    b = respond(log, "q", "answer B", source="compare")
    comp = log.create_comparison("q", "prompt text", a, b)
    assert comp["choice"] is None and comp["answer_a"] == "answer A"
    assert [c["id"] for c in log.pending_comparisons(10)] == [comp["id"]]

    decided = log.choose(comp["id"], "A", idempotency_key="k1")
    assert decided["choice"] == "A" and decided["chosen_at"]
    (pair,) = log.pairs()
    assert (pair["source"], pair["origin_id"]) == ("comparison", comp["id"])
    assert (pair["chosen"], pair["rejected"]) == ("answer A", "answer B")
    assert log.pending_comparisons(10) == []

    assert log.choose(comp["id"], "A", idempotency_key="k1") == decided  # retry: no change
    log.choose(comp["id"], "B")  # changed their mind: the pair flips
    (pair,) = log.pairs()
    assert (pair["chosen"], pair["rejected"]) == ("answer B", "answer A")

    log.choose(comp["id"], "tie")
    assert log.pairs() == []
    assert log.get_comparison(comp["id"])["choice"] == "tie"
    assert log.stats()["comparisons"] == {"decided": 1, "pending": 0}


def test_rechoosing_keeps_a_trained_pair(log: PreferenceLog):
    a = respond(log, "q", "answer A")
    b = respond(log, "q", "answer B")
    comp = log.create_comparison("q", "p", a, b)
    log.choose(comp["id"], "A")
    log.mark_trained([p["id"] for p in log.pairs()], "v0001")
    log.choose(comp["id"], "B")
    (pair,) = log.pairs()
    assert pair["chosen"] == "answer A" and pair["trained_in_version"] == "v0001"
    assert log.get_comparison(comp["id"])["choice"] == "B"


# -- synthetic pairs, export, stats -----------------------------------------------------------

def test_synthetic_pairs_are_deduplicated_by_origin(log: PreferenceLog):
    prompt = [SYSTEM, user("q")]
    pid = log.add_synthetic_pair(prompt, "with context", "without context", "note.md#3")
    assert pid is not None
    assert log.add_synthetic_pair(prompt, "other", "text", "note.md#3") is None
    assert log.add_synthetic_pair(prompt, "same", "same", "note.md#4") is None  # no preference
    (pair,) = log.pairs(untrained_only=True)
    assert pair["id"] == pid and pair["source"] == "synthetic" and pair["prompt"] == prompt


def test_export_writes_trl_conversational_jsonl(log: PreferenceLog, tmp_path: Path):
    rid = respond(log, "Why? ünïcode", "Because.")
    log.correct(rid, "Because of [1].")
    log.add_synthetic_pair([SYSTEM, user("s")], "yes", "no", "note.md#0")
    out = tmp_path / "export" / "pairs.jsonl"

    assert log.export_pairs_jsonl(out) == 2
    lines = out.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert records[0] == {
        "prompt": [SYSTEM, user("Why? ünïcode")],
        "chosen": [{"role": "assistant", "content": "Because of [1]."}],
        "rejected": [{"role": "assistant", "content": "Because."}],
    }
    for rec in records:
        assert list(rec) == ["prompt", "chosen", "rejected"]
        assert [m["role"] for m in rec["prompt"]] == ["system", "user"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["pairs.jsonl"]  # no temp left

    log.mark_trained([log.pairs()[0]["id"]], "v0001")
    assert log.export_pairs_jsonl(out, untrained_only=True) == 1
    assert json.loads(out.read_text(encoding="utf-8"))["chosen"][0]["content"] == "yes"


def test_stats_counts_todays_feedback(log: PreferenceLog):
    empty = log.stats()
    assert empty["responses"] == 0 and empty["rated_today"] == 0
    assert empty["pairs"] == {"comparison": 0, "correction": 0, "rating": 0, "synthetic": 0}
    ids = [respond(log, "q", f"a{i}") for i in range(4)]
    log.rate(ids[0], 1)
    log.correct(ids[1], "fixed")
    comp = log.create_comparison("q", "p", ids[2], ids[3])
    assert log.stats()["rated_today"] == 2  # a pending comparison is not feedback yet
    log.choose(comp["id"], "B")
    stats = log.stats()
    assert stats["rated_today"] == 3
    assert stats["pairs_total"] == 2 and stats["pairs_untrained"] == 2


# -- bad input --------------------------------------------------------------------------------

def test_unknown_ids_raise_not_found(log: PreferenceLog):
    rid = respond(log, "q", "a")
    with pytest.raises(NotFound):
        log.rate("r_nope", 1)
    with pytest.raises(NotFound):
        log.correct("r_nope", "text")
    with pytest.raises(NotFound):
        log.undo_rating("rt_nope")
    with pytest.raises(NotFound):
        log.choose("c_nope", "A")
    with pytest.raises(NotFound):
        log.create_comparison("q", "p", rid, "r_nope")
    assert issubclass(NotFound, UserError)
    assert log.get_comparison("c_nope") is None
    assert log.stats()["comparisons"] == {"decided": 0, "pending": 0}


@pytest.mark.parametrize("value", [0, 2, -2, True, 1.0, "1", None])
def test_rating_value_must_be_plus_or_minus_one(log: PreferenceLog, value):
    rid = respond(log, "q", "a")
    with pytest.raises(ValueError):
        log.rate(rid, value)
    assert count(log.path, "ratings") == 0


def test_other_invalid_values_raise_value_error(log: PreferenceLog):
    a = respond(log, "q", "a")
    b = respond(log, "q", "b")
    comp = log.create_comparison("q", "p", a, b)
    with pytest.raises(ValueError):
        log.choose(comp["id"], "C")
    with pytest.raises(ValueError):
        log.create_comparison("q", "p", a, a)
    with pytest.raises(ValueError):
        log.correct(a, "   ")
    with pytest.raises(ValueError):
        respond(log, "q", "a", source="web")
    with pytest.raises(ValueError):
        log.add_synthetic_pair([{"role": "user"}], "x", "y", "o")
    with pytest.raises(ValueError):
        log.mark_trained([], "")


# -- failures ---------------------------------------------------------------------------------

def test_locked_database_fails_cleanly_and_store_recovers(db_path: Path):
    with PreferenceLog(db_path, busy_timeout_ms=50) as log:
        a = respond(log, "q", "good")
        b = respond(log, "q", "bad")
        log.rate(a, 1)

        blocker = raw(db_path)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(PreferenceLogError) as info:
                log.rate(b, -1)
            message = str(info.value)
            assert "locked" in message and "retry" in message and "\n" not in message
            assert isinstance(info.value, UserError)
            assert log.get_response(b)["answer"] == "bad"  # WAL: reads still work
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()

        assert count(db_path, "ratings") == 1 and count(db_path, "pairs") == 0
        down = log.rate(b, -1)  # the writer thread survived
        assert log.get_rating(down["id"])["value"] == -1
        assert len(log.pairs()) == 1


def test_failure_mid_transaction_leaves_no_partial_rows(log: PreferenceLog, monkeypatch):
    from vault_agent.feedback import pairs as pairlib

    a = respond(log, "q", "good")
    b = respond(log, "q", "bad")
    log.rate(a, 1)

    def disk_full(conn, rating_id):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(pairlib, "derive_rating_pairs", disk_full)
    with pytest.raises(PreferenceLogError, match="disk is full"):
        log.rate(b, -1)  # the rating row was inserted before the failure
    assert count(log.path, "ratings") == 1

    monkeypatch.undo()
    log.rate(b, -1)
    assert count(log.path, "ratings") == 2 and len(log.pairs()) == 1


def test_closed_store_refuses_politely(db_path: Path):
    log = PreferenceLog(db_path)
    log.close()
    log.close()  # twice is fine
    with pytest.raises(PreferenceLogError, match="closed"):
        respond(log, "q", "a")
    with pytest.raises(PreferenceLogError, match="closed"):
        log.stats()


def test_a_file_that_is_not_a_database_gives_a_one_line_error(db_path: Path):
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(PreferenceLogError, match="move it aside"):
        PreferenceLog(db_path)


# -- durability -------------------------------------------------------------------------------

CHILD = """
import sys
from vault_agent.feedback.store import PreferenceLog
log = PreferenceLog(sys.argv[1])
for i in range(100_000):
    rid = log.record_response(
        question=f"q{i}", prompt="p", messages=[{"role": "user", "content": "q"}],
        answer=f"a{i}", retrieved=[], citations=[], model_id="m", adapter_version=None,
        timings={})
    rating = log.rate(rid, 1 if i % 2 else -1, idempotency_key=f"k{i}")
    print(rating["id"], flush=True)  # printed only after COMMIT returned
"""


def test_acknowledged_ratings_survive_sigkill(db_path: Path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(db_path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    acked = []
    try:
        for line in proc.stdout:
            acked.append(line.strip())
            if len(acked) >= 40:
                break
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: it is busy writing the next one
        proc.wait(timeout=30)
        rest = proc.stdout.read()
        # Lines printed in full before the kill were acknowledged too.
        acked += [ln for ln in rest.split("\n")[:-1] if ln.strip()]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    assert len(acked) >= 40

    with PreferenceLog(db_path) as log:
        missing = [rid for rid in acked if log.get_rating(rid) is None]
        assert missing == []
        assert log.stats()["ratings"]["up"] + log.stats()["ratings"]["down"] >= len(acked)


# -- idempotency: one record per key ----------------------------------------------------------

def test_a_late_retry_of_an_older_choice_changes_nothing(log: PreferenceLog):
    a, b = respond(log, "q", "answer A"), respond(log, "q", "answer B")
    comp = log.create_comparison("q", "p", a, b)
    first = log.choose(comp["id"], "A", idempotency_key="k1")
    log.choose(comp["id"], "B", idempotency_key="k2")
    assert log.choose(comp["id"], "A", idempotency_key="k1") == first  # the original result...
    assert log.get_comparison(comp["id"])["choice"] == "B"  # ...and B stands
    (pair,) = log.pairs()
    assert pair["chosen"] == "answer B"


def test_keys_stored_before_the_idempotency_table_still_hold(db_path: Path):
    # a log written before m006: the comparison carries its (last) key in its own column
    db_path.parent.mkdir(parents=True, exist_ok=True)
    conn = raw(db_path)
    conn.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    for fn in migrations.MIGRATIONS:
        if fn.__name__ < "m006":
            fn(conn)
            conn.execute("INSERT INTO _migrations VALUES (?, '2026-01-01T00:00:00+00:00')", (fn.__name__,))
    for rid, answer in (("r_a", "answer A"), ("r_b", "answer B")):
        conn.execute("INSERT INTO responses VALUES (?, '2026-01-01', 'q', 'q', 'p', '[]', ?, '[]', '[]', 'm', NULL,"
                     " '{}', 'compare')", (rid, answer))
    conn.execute("INSERT INTO comparisons VALUES ('c_1', 'q', 'p', 'r_a', 'r_b', '2026-01-01', 'A', '2026-01-01',"
                 " 'old-key')")
    conn.commit()
    conn.close()
    with PreferenceLog(db_path) as log:
        assert log.choose("c_1", "B", idempotency_key="old-key")["choice"] == "A"  # a retry: no change
        assert log.get_comparison("c_1")["choice"] == "A"
        assert log.choose("c_1", "B", idempotency_key="new-key")["choice"] == "B"


def test_a_log_from_before_m007_loses_the_comparison_key_column_and_keeps_its_rows(db_path: Path):
    db_path.parent.mkdir(parents=True, exist_ok=True)
    conn = raw(db_path)
    conn.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    for fn in migrations.MIGRATIONS:
        if fn.__name__ < "m007":
            fn(conn)
            conn.execute("INSERT INTO _migrations VALUES (?, '2026-01-01T00:00:00+00:00')", (fn.__name__,))
    for rid, answer in (("r_a", "answer A"), ("r_b", "answer B"), ("r_c", "answer C")):
        conn.execute("INSERT INTO responses VALUES (?, '2026-01-01', 'q', 'q', 'p', '[]', ?, '[]', '[]', 'm', NULL,"
                     " '{}', 'compare')", (rid, answer))
    conn.execute("INSERT INTO comparisons VALUES ('c_1', 'q', 'p', 'r_a', 'r_b', '2026-01-01', 'A', '2026-01-02',"
                 " 'old-key')")
    conn.execute("INSERT INTO comparisons VALUES ('c_2', 'q', 'p', 'r_b', 'r_c', '2026-01-03', NULL, NULL, NULL)")
    conn.execute("INSERT INTO idempotency VALUES ('choose', 'old-key', 'c_1', NULL, '2026-01-02')")
    conn.commit()
    conn.close()
    with PreferenceLog(db_path) as log:
        assert log.get_comparison("c_1") == {"id": "c_1", "question": "q", "prompt": "p", "response_a": "r_a",
                                             "response_b": "r_b", "created": "2026-01-01", "choice": "A",
                                             "chosen_at": "2026-01-02", "answer_a": "answer A",
                                             "answer_b": "answer B"}
        assert [c["id"] for c in log.pending_comparisons()] == ["c_2"]
        assert log.choose("c_1", "B", idempotency_key="old-key")["choice"] == "A"  # the key still holds
        assert log.choose("c_2", "B", idempotency_key="k2")["choice"] == "B"
    with raw(db_path) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(comparisons)")}
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(comparisons)")}
    assert "idempotency_key" not in columns and "chosen_at" in columns
    assert {"comparisons_a", "comparisons_b"} <= indexes
