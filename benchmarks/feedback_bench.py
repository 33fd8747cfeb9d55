"""Sustained rating writes: POST /feedback on the real daemon (a subprocess) with concurrent clients,
beside the same load through PreferenceLog.rate in-process (no HTTP) and a bare SQLite insert loop
with the same durability (WAL, synchronous=FULL, one transaction per row), all in the same run.

Responses to rate are written through PreferenceLog.record_response into a log that is copied to
each phase's place (the daemon's <VAULT_AGENT_HOME>/data/preferences.sqlite before it starts), so no
generation is needed: --responses answers to --responses/2 questions (two answers per question, so
opposite thumbs derive DPO pairs as they do in use). Writes go round the responses, each with a unique
idempotency key; the first lap puts a first thumb on each response, later laps flip it (undo + insert
+ pair derivation, one transaction). The default 2,000 responses keep a few ratings per response, as
in use: with --responses 20 every response piles up hundreds of undone ratings in 10 s, and a write's
cost grows with them (the live-thumb lookups scan all of a response's ratings).

    .venv/bin/python benchmarks/feedback_bench.py [--seconds 10] [--writes N] [--clients 4] [--responses 2000]
        [--wait-quiet 600] [--out f.json] [--smoke]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_mb, summary_ms, write_result  # noqa: E402
from _daemon import (DaemonProcess, NoiseMonitor, busy_processes, copy_sample_vault, cpu_busy,  # noqa: E402
                     daemon_env, proc_cpu_seconds, wait_quiet)

HERE = Path(__file__).resolve().parent
QUESTIONS = HERE / "data" / "sample_vault_questions.jsonl"


def seed_responses(db: Path, n: int) -> list[str]:
    """n responses, two per question (questions made distinct, so only the two answers pair up)."""
    from vault_agent.feedback.store import PreferenceLog

    questions = [json.loads(line)["question"] for line in QUESTIONS.read_text().splitlines() if line.strip()]
    ids = []
    with PreferenceLog(db) as log:
        for i in range(n):
            q = f"{questions[(i // 2) % len(questions)]} (#{i // 2})"
            messages = [{"role": "system", "content": "You answer questions using only the numbered notes."},
                        {"role": "user", "content": f"Notes:\n\n[1] Note\n{'some note text ' * 60}\n\nQuestion: {q}"}]
            ids.append(log.record_response(
                question=q, prompt=messages[-1]["content"], messages=messages,
                answer=f"Answer {i % 2} to this question, citing [1]. " * 4, retrieved=["c1", "c2", "c3", "c4"],
                citations=[{"n": 1, "path": "Note.md"}], model_id="bench", adapter_version=None,
                timings={"retrieval_ms": 1.0}, source="ask"))
    return ids


def load(write_one, n_clients: int, seconds: float, max_writes: int | None, make_ctx=None) -> dict:
    """`n_clients` threads calling write_one(ctx, k) for k = 0, 1, 2, ... until `seconds` or `max_writes`."""
    counter = itertools.count()
    latencies: list[list[float]] = [[] for _ in range(n_clients)]
    errors: list[str] = []
    barrier = threading.Barrier(n_clients + 1)
    deadline = [0.0]

    def worker(i: int) -> None:
        ctx = make_ctx() if make_ctx else None
        try:
            barrier.wait()
            while time.perf_counter() < deadline[0]:
                k = next(counter)
                if max_writes is not None and k >= max_writes:
                    break
                t0 = time.perf_counter()
                try:
                    write_one(ctx, k)
                except Exception as e:
                    errors.append(f"{type(e).__name__}: {e}"[:200])
                    continue
                latencies[i].append(time.perf_counter() - t0)
        finally:
            if ctx is not None:
                ctx.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_clients)]
    for t in threads:
        t.start()
    deadline[0] = time.perf_counter() + seconds
    start = time.perf_counter()
    barrier.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    lat = [x for per in latencies for x in per]
    return {"writes": len(lat), "errors": len(errors), "first_errors": errors[:3], "wall_s": round(wall, 2),
            "writes_per_s": round(len(lat) / wall, 1), "latency": summary_ms(lat) if lat else None}


def rating_for(ids: list[str], k: int) -> tuple[str, int]:
    """Round the responses, flipping each one's thumb every lap, and the two answers to one question
    always opposite: each write inserts a thumb (replacing the last one after the first lap), and
    the second answer's thumb derives a pair."""
    lap, i = divmod(k, len(ids))
    return ids[i], 1 if (lap + i) % 2 == 0 else -1


def table_counts(db: Path) -> dict:
    with sqlite3.connect(db) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("ratings", "pairs")}


def bare_loop(db: Path, seconds: float, max_writes: int | None, response_ids: list[str]) -> dict:
    """One connection, one INSERT per BEGIN IMMEDIATE ... COMMIT, the ratings table's own schema."""
    import secrets
    from datetime import datetime, timezone

    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    lat = []
    deadline = time.perf_counter() + seconds
    start = time.perf_counter()
    k = 0
    while time.perf_counter() < deadline and (max_writes is None or k < max_writes):
        rid, value = rating_for(response_ids, k)
        t0 = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO ratings (id, response_id, value, comment, created, idempotency_key) "
                     "VALUES (?, ?, ?, ?, ?, ?)",
                     (f"rt_{secrets.token_urlsafe(9)}", rid, value, None,
                      datetime.now(timezone.utc).isoformat(timespec="microseconds"), f"bare-{k}:rate"))
        conn.execute("COMMIT")
        lat.append(time.perf_counter() - t0)
        k += 1
    wall = time.perf_counter() - start
    conn.close()
    return {"threads": 1, "writes": len(lat), "wall_s": round(wall, 2), "writes_per_s": round(len(lat) / wall, 1),
            "latency": summary_ms(lat)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each load phase")
    parser.add_argument("--writes", type=int, help="stop each phase after this many writes (default: time only)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--responses", type=int, default=2000, help="responses to rate (even)")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    parser.add_argument("--out")
    parser.add_argument("--wait-quiet", type=float, default=0,
                        help="first wait up to this many seconds for the machine to go idle")
    parser.add_argument("--smoke", action="store_true",
                        help="a seconds-long run that checks the script works (fake chat model; figures mean nothing)")
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.writes, args.clients, args.responses = 1.0, 40, 2, 20
    if args.responses < 2 or args.responses % 2:
        parser.error("--responses must be even (two answers per question)")
    quiet = wait_quiet(args.wait_quiet) if args.wait_quiet else None

    root = Path(tempfile.mkdtemp(prefix="va-feedback-bench-"))
    vault = copy_sample_vault(root)
    home = root / "home"
    noise_before = busy_processes({os.getpid()})
    load_before = os.getloadavg()
    os.environ.update(daemon_env(root / "unused-home"))  # nothing of ours lands in the user's home
    from vault_agent.feedback.store import PreferenceLog

    # ---- the daemon: POST /feedback ----
    template = root / "seed" / "preferences.sqlite"
    seeded = seed_responses(template, args.responses + 20)  # closed: checkpointed into the one file
    ids, warm_ids = seeded[: args.responses], seeded[args.responses:]

    def fresh_log(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, path)
        assert not template.with_name(template.name + "-wal").exists(), "seed log not checkpointed"
        return path

    daemon_db = fresh_log(home / "data" / "preferences.sqlite")
    monitor = NoiseMonitor().start()
    monitor.phase = "daemon_start"
    daemon = DaemonProcess(vault, home, fake_model=args.smoke)  # no generation here: the model only costs start-up
    try:
        daemon.start(monitor=monitor)

        def http_write(http, k: int) -> None:
            rid, value = rating_for(ids, k)
            r = http.post("/feedback", json={"response_id": rid, "rating": value},
                          headers={"Idempotency-Key": f"http-{k}"})
            if r.status_code != 200:
                raise RuntimeError(f"HTTP {r.status_code}: {r.text[:100]}")

        with daemon.client() as http:  # warm-up: threadpool, read connections (keys unused below)
            for k in range(20):
                r = http.post("/feedback", json={"response_id": warm_ids[k], "rating": 1},
                              headers={"Idempotency-Key": f"warm-{k}"})
                r.raise_for_status()
        monitor.phase = "http"
        cpu0 = proc_cpu_seconds(daemon.proc.pid), time.process_time()
        http_run = load(http_write, args.clients, args.seconds, args.writes, make_ctx=daemon.client)
        cpu1 = proc_cpu_seconds(daemon.proc.pid), time.process_time()
        monitor.phase = "between"
        n = max(http_run["writes"], 1)
        http_run["cpu_ms_per_write"] = {"daemon": round((cpu1[0] - cpu0[0]) * 1000 / n, 3),
                                        "clients_in_bench_process": round((cpu1[1] - cpu0[1]) * 1000 / n, 3)}
        http_run["cpu_cores_used"] = {"daemon": round((cpu1[0] - cpu0[0]) / http_run["wall_s"], 2),
                                      "clients_in_bench_process": round((cpu1[1] - cpu0[1]) / http_run["wall_s"], 2)}
        noise_during = busy_processes({os.getpid(), daemon.proc.pid})
        daemon_mem = daemon.peak_rss_mb()
    finally:
        rc = daemon.stop()
    http_run["writes_per_response"] = round(http_run["writes"] / args.responses, 1)
    http_run["rows_after"] = table_counts(daemon_db)

    # ---- PreferenceLog.rate in this process, same load, fresh log with the same responses ----
    log_db = root / "direct" / "preferences.sqlite"
    with PreferenceLog(fresh_log(log_db)) as log:
        for k in range(20):
            log.rate(warm_ids[k], 1, idempotency_key=f"warm-{k}:rate")

        def log_write(_ctx, k: int) -> None:
            rid, value = rating_for(ids, k)
            log.rate(rid, value, idempotency_key=f"log-{k}:rate")

        monitor.phase = "log"
        cpu0 = time.process_time()
        log_run = load(log_write, args.clients, args.seconds, args.writes)
        log_run["cpu_ms_per_write"] = round((time.process_time() - cpu0) * 1000 / max(log_run["writes"], 1), 3)
        monitor.phase = "between"
    log_run["writes_per_response"] = round(log_run["writes"] / args.responses, 1)
    log_run["rows_after"] = table_counts(log_db)

    # ---- bare SQLite: the same schema (migrated by PreferenceLog), one INSERT per transaction ----
    bare_db = root / "bare" / "preferences.sqlite"
    fresh_log(bare_db)
    monitor.phase = "bare"
    cpu0 = time.process_time()
    bare_run = bare_loop(bare_db, args.seconds, args.writes, ids)
    bare_run["cpu_ms_per_write"] = round((time.process_time() - cpu0) * 1000 / max(bare_run["writes"], 1), 3)
    monitor.phase = "end"
    noise = monitor.stop()
    bare_run["writes_per_response"] = round(bare_run["writes"] / args.responses, 1)
    bare_run["rows_after"] = table_counts(bare_db)

    peak = daemon_mem["peak_rss_mb"]
    noisy = [p for p in ("http", "log", "bare") if noise.get(p, {}).get("other_cores_mean", 0) >= 0.2]
    http_vs_bare = round(http_run["writes_per_s"] / bare_run["writes_per_s"], 3)
    results = {
        "setup": {
            "clients": args.clients, "seconds": args.seconds, "writes_cap": args.writes,
            "responses": args.responses, "questions": (args.responses + 1) // 2, "cpus": os.cpu_count(),
            "sqlite": sqlite3.sqlite_version, "durability": "WAL, synchronous=FULL, one transaction per write",
            "write_pattern": "round-robin over responses, thumb flips every lap (lap 1: first thumbs), the two "
                             "answers to a question get opposite thumbs: a write = [undo old thumb +] insert "
                             "[+ derive a pair], one transaction",
            "daemon_exit_code": rc, "loadavg_before": [round(x, 2) for x in load_before],
            "waited_for_quiet": quiet, "machine_cpu_busy_after": cpu_busy(),
            "other_busy_processes": sorted(set(noise_before + noise_during)),
            "other_cpu_load_by_phase": noise,
        },
        "note": "http and log latencies are per write under 4 concurrent clients (they queue for the one writer "
                "thread); the bare loop is one thread. cpu_ms_per_write of the bench process includes the 1 Hz "
                "noise monitor.",
        "http_feedback": http_run,
        "preference_log_rate_in_process": log_run,
        "bare_sqlite_insert_loop": bare_run,
        "comparison": {
            "writes_per_s_ratio_http_over_bare": http_vs_bare,
            "writes_per_s_ratio_log_over_bare": round(log_run["writes_per_s"] / bare_run["writes_per_s"], 3),
            "writes_per_s_ratio_http_over_log": round(http_run["writes_per_s"] / log_run["writes_per_s"], 3),
            "p50_ms_added_by_http": round(http_run["latency"]["p50_ms"] - log_run["latency"]["p50_ms"], 2),
        },
        "memory": {"daemon": daemon_mem, "bench_process_peak_rss_mb": peak_rss_mb()},
        "noisy_phases": noisy,
        "targets": {
            "measured_on_a_quiet_machine": not noisy,
            "daemon_peak_rss_mb<1536": {"value": peak, "result": "PASS" if peak and peak < 1536 else "FAIL"},
        },
    }
    if args.keep:
        results["setup"]["root"] = str(root)
    else:
        shutil.rmtree(root, ignore_errors=True)
    write_result("feedback_bench", results, args.out)


if __name__ == "__main__":
    main()
