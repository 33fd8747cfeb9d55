"""Serving overhead of the real daemon against raw llama-cpp-python on the same prompts, measured
in the same run: time to first token, decode tokens/s, retrieval's share of latency, throughput
with 4 concurrent clients, and the daemon's peak RSS.

The daemon (`vault-agent serve`, a subprocess with its own VAULT_AGENT_HOME) answers the questions
through POST /ask/stream. The exact messages it sent the model are read back from GET /responses;
after the daemon has stopped (so the two never share the cores) the same messages go, in the same
order, through `llama_cpp.Llama.create_chat_completion(stream=True)` in this process with the same
model, n_ctx, threads, seed and sampling arguments and libgomp's default wait policy (what a plain
llama-cpp-python script, llama-server or Ollama gets, and what the daemon uses since issue 12).

The decode grid (issue 12; --no-grid skips it) measures, in the same run, idle and under indexing
load: ours; the daemon as it was before issue 12 (OMP_WAIT_POLICY=PASSIVE, fixed threads, no
pausing of the indexer); raw llama.cpp with libgomp's default and with PASSIVE (child processes,
beside an embedder process for the load cells); and ours beside an embedder process it cannot
pause. Under load the daemon indexes --load-notes synthetic notes added to its vault. Each side
makes --passes passes; per question the fastest pass counts, so a pass slowed by another job on a
shared machine is rejected (all passes are reported).

    .venv/bin/python benchmarks/serve_bench.py [--questions 10] [--max-tokens 128] [--passes 2] [--clients 4]
        [--wait-quiet 600] [--load-notes 1500] [--no-grid] [--out f.json] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_mb, summary_ms, write_result  # noqa: E402
from _daemon import (daemon_env, busy_processes, wait_quiet, NoiseMonitor, DaemonProcess, copy_sample_vault)  # noqa: E402
from _load_grid import add_notes, embedder_process, index_progress, run_raw_child, wait_for_indexing  # noqa: E402
from _serve_figures import (best_runs, cell, child_cell, comparison, grid_table, ours_figures,  # noqa: E402
                            raw_figures, ratio, ttft)

HERE = Path(__file__).resolve().parent
QUESTIONS = HERE / "data" / "sample_vault_questions.jsonl"


# --- measurements ---------------------------------------------------------------------------------


def ask_stream(http, question: str) -> dict:
    """One /ask/stream request, timed on the client: TTFT, every token event, the final event."""
    t0 = time.perf_counter()
    first = last = None
    n_tokens = 0
    final = None
    event = None
    with http.stream("POST", "/ask/stream", json={"question": question}) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event:
                if event == "token":
                    last = time.perf_counter()
                    first = first or last
                    n_tokens += 1
                elif event == "final":
                    final = json.loads(line[6:])
                elif event == "error":
                    raise RuntimeError(f"daemon error: {line[6:]}")
    end = time.perf_counter()
    if final is None:
        raise RuntimeError("stream ended without a final event")
    return {"start": t0, "first": first, "last": last, "end": end, "token_events": n_tokens, "final": final}


def sampling(llm_settings) -> dict:
    """The generation arguments LlamaBackend.stream_chat passes, taken from the backend module."""
    from vault_agent.llm.backend import sampling_args

    return sampling_args(llm_settings)


def import_llama_cpp():
    """llama_cpp imported the way the daemon imports it (llm.omp_wait_policy's default leaves libgomp's own policy)."""
    from vault_agent.llm import lora

    return lora.import_llama_cpp() if hasattr(lora, "import_llama_cpp") else __import__("llama_cpp")


def raw_passes(messages: list[list[dict]], warm_messages: list[dict], passes: int, monitor=None, tag: str = "raw",
               plain_import: bool = False):
    """Load the model as LlamaBackend does, warm up, then `passes` passes over `messages` in order.
    Settings come from load_settings() (VAULT_AGENT_* in this process's environment)."""
    from vault_agent.config import load_settings
    from vault_agent.llm.backend import llama_args, resolve_model_path
    from vault_agent.llm.merged_copy import served_copies

    llama_cpp = __import__("llama_cpp") if plain_import else import_llama_cpp()
    s = load_settings().llm
    args = llama_args(s)  # the constructor arguments LlamaBackend uses
    threads = args["n_threads"]
    t0 = time.perf_counter()
    from vault_agent.llm.lora import adapter_safe_loading

    with adapter_safe_loading():  # loaded as the daemon loads it, so the two are comparable
        llm = llama_cpp.Llama(**args)
    load_s = time.perf_counter() - t0
    out, walls = [], []
    try:
        raw_stream(llm, warm_messages, s)
        for p in range(passes):
            if monitor is not None:
                monitor.phase = f"{tag}_{p + 1}"
            t0 = time.perf_counter()
            out.append([raw_stream(llm, m, s) for m in messages])
            walls.append(time.perf_counter() - t0)
        if monitor is not None:
            monitor.phase = "end"
    finally:
        llm.close()
    info = {"n_ctx": s.n_ctx, "n_threads": threads, "sampling": sampling(s), "load_s": round(load_s, 2),
            "model": resolve_model_path(s.model_path).name, "llama_cpp_python": llama_cpp.__version__,
            # raw llama.cpp loads the model file; the daemon may serve its Q8_0 copy (llm/merged_copy.py),
            # whose faster prompt evaluation then shows in the comparison (a negative added first token)
            "daemon_serves_q8_0_copy": served_copies(s.adapter_serving, resolve_model_path(s.model_path),
                                                     s.n_gpu_layers),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "(unset: libgomp default, spins)")}
    return out, walls, info


def raw_child(job: str, result: str) -> None:
    """--raw-child: raw_passes in a fresh process (another OMP_WAIT_POLICY needs a fresh libgomp),
    with the embedding load process beside it when the job says so."""
    import contextlib

    from _load_grid import embedder_process

    data = json.loads(Path(job).read_text())
    with embedder_process() if data.get("load") else contextlib.nullcontext():
        out, walls, info = raw_passes(data["messages"], data["warm"], data["passes"], plain_import=True)
    Path(result).write_text(json.dumps({"passes": out, "walls": walls, "info": info}))


def raw_stream(llm, messages: list[dict], llm_settings) -> dict:
    """The same request straight through llama-cpp-python, the way LlamaBackend.stream_chat makes it."""
    t0 = time.perf_counter()
    first = last = None
    n_tokens = 0
    pieces = []
    chunks = llm.create_chat_completion(messages=messages, stream=True, **sampling(llm_settings))
    try:
        for chunk in chunks:
            piece = chunk["choices"][0]["delta"].get("content")
            if piece:
                last = time.perf_counter()
                first = first or last
                n_tokens += 1
                pieces.append(piece)
    finally:
        chunks.close()
    end = time.perf_counter()
    return {"start": t0, "first": first, "last": last, "end": end, "token_events": n_tokens,
            "text": "".join(pieces).strip()}


def concurrent_run(daemon: DaemonProcess, questions: list[str], clients: int) -> dict:
    """`clients` threads, each its own HTTP client, splitting the questions between them."""
    results: list[dict] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def worker(mine: list[str]) -> None:
        with daemon.client() as http:
            barrier.wait()
            for q in mine:
                try:
                    out = ask_stream(http, q)
                except Exception as e:  # reported, not fatal: a 503 (queue full) is a finding
                    with lock:
                        errors.append(f"{type(e).__name__}: {e}")
                    continue
                with lock:
                    results.append(out)

    threads = [threading.Thread(target=worker, args=(questions[i::clients],)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"runs": results, "errors": errors, "wall_s": wall}


def load_settings_for_report():
    from vault_agent.config import load_settings

    return load_settings().llm


# the daemon before issue 12: sleeping OpenMP threads, fixed threads, no pausing of the indexer, and
# (before issue 22) PyTorch embedding in batches of 64 chunks whatever their length
OLD_DAEMON = {"VAULT_AGENT_LLM__OMP_WAIT_POLICY": "passive", "VAULT_AGENT_LLM__THREADS_FOLLOW_LOAD": "false",
              "VAULT_AGENT_INDEX__YIELD_TO_ANSWERS": "false", "VAULT_AGENT_INDEX__EMBEDDING_BACKEND": "torch",
              "VAULT_AGENT_INDEX__BATCH_TOKENS": "1000000"}


def daemon_session(root: Path, name: str, questions: list[str], warmup_q: str, args, monitor,
                   settings_env: dict, main: bool) -> dict:
    """One daemon on a fresh copy of the sample vault: sequential passes idle, then (main only) the
    concurrent run and passes beside an embedder process, then passes while it indexes added notes."""
    vault = copy_sample_vault(root / name)
    daemon = DaemonProcess(vault, root / name / "home", **settings_env)
    out: dict = {"name": name}
    try:
        monitor.phase = f"{name}_start"
        daemon.start(monitor=monitor)
        with daemon.client() as http:
            out["warm"] = ask_stream(http, warmup_q)  # embedder + model warm-up, not timed

            def passes(tag: str) -> tuple[list, list]:
                runs, walls = [], []
                for p in range(args.passes):
                    monitor.phase = f"{name}_{tag}_{p + 1}"
                    t0 = time.perf_counter()
                    runs.append([ask_stream(http, q) for q in questions])
                    walls.append(time.perf_counter() - t0)
                return runs, walls

            out["idle"], out["idle_walls"] = passes("sequential")
            out["stored"] = {r["id"]: r for r in
                             http.get("/responses", params={"limit": 500}).raise_for_status().json()["responses"]}
            if main:
                monitor.phase = f"{name}_concurrent"
                out["concurrent"] = concurrent_run(daemon, questions, args.clients)
                if args.grid:
                    with embedder_process() as load:
                        monitor.ours.add(load.pid)
                        out["external_load"], _ = passes("external_load")
            out["memory_idle"] = daemon.peak_rss_mb()  # before the added notes make it index
            if args.load_notes:
                before = index_progress(http)
                out["added_chars"] = add_notes(vault, args.load_notes)
                out["index_at_start"] = wait_for_indexing(http, before["notes_total"])
                out["load"], _ = passes("indexing_load")
                out["index_at_end"] = index_progress(http)
        monitor.phase = "between"
        out["noise_during"] = busy_processes({os.getpid(), daemon.proc.pid})
        out["memory"] = daemon.peak_rss_mb()
        out["index"] = daemon.index
        out["ready_s"] = round(daemon.ready_s, 2)
        out["env"] = daemon.env
    finally:
        out["exit_code"] = daemon.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=10, help="questions to time (from the question set)")
    parser.add_argument("--max-tokens", type=int, default=128, help="llm.max_tokens for the daemon and for raw")
    parser.add_argument("--passes", type=int, default=2,
                        help="sequential passes over the questions, for ours and for raw; per question the "
                             "fastest pass counts (noise rejection), every pass is reported too")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients for the throughput run")
    parser.add_argument("--question-file", default=str(QUESTIONS))
    parser.add_argument("--keep", action="store_true", help="keep the temp home (daemon.log, preferences)")
    parser.add_argument("--wait-quiet", type=float, default=0,
                        help="first wait up to this many seconds for the machine to go idle")
    parser.add_argument("--load-notes", type=int, default=1500,
                        help="notes added to the served vault for the indexing-load passes (0: no load passes)")
    parser.add_argument("--no-grid", dest="grid", action="store_false",
                        help="skip the decode grid: the pre-issue-12 daemon and raw llama.cpp with both wait "
                             "policies, idle and beside an embedder")
    parser.add_argument("--raw-timeout", type=float, default=600, help=argparse.SUPPRESS)
    parser.add_argument("--raw-child", nargs=2, metavar=("JOB", "RESULT"), help=argparse.SUPPRESS)
    parser.add_argument("--out")
    parser.add_argument("--smoke", action="store_true",
                        help="one short question, one pass, a small load: checks the script works (figures mean nothing)")
    args = parser.parse_args()
    if args.smoke:
        args.questions, args.max_tokens, args.passes, args.clients, args.grid, args.load_notes = 1, 4, 1, 1, False, 40
    if args.raw_child:
        return raw_child(*args.raw_child)
    quiet = wait_quiet(args.wait_quiet) if args.wait_quiet else None

    all_q = [json.loads(line)["question"] for line in Path(args.question_file).read_text().splitlines() if line.strip()]
    if len(all_q) < args.questions + 1:
        raise SystemExit(f"need {args.questions + 1} questions (one is the warm-up), have {len(all_q)}")
    warmup_q, questions = all_q[-1], all_q[: args.questions]

    root = Path(tempfile.mkdtemp(prefix="va-serve-bench-"))
    settings_env = {"VAULT_AGENT_LLM__MAX_TOKENS": str(args.max_tokens)}
    noise_before = busy_processes({os.getpid()})
    load_before = os.getloadavg()
    monitor = NoiseMonitor().start()

    # ---- the daemon, then (grid) the daemon as it was before issue 12 ----
    ours = daemon_session(root, "ours", questions, warmup_q, args, monitor, settings_env, main=True)
    before = (daemon_session(root, "before", questions, warmup_q, args, monitor, {**settings_env, **OLD_DAEMON},
                             main=False) if args.grid else None)
    seq_passes, seq_walls, stored, conc = ours["idle"], ours["idle_walls"], ours["stored"], ours["concurrent"]
    messages = [stored[r["final"]["response_id"]]["messages"] for r in seq_passes[0]]
    same_prompts = all(stored[r["final"]["response_id"]]["messages"] == m
                       for runs in seq_passes[1:] for r, m in zip(runs, messages))
    warm_messages = stored[ours["warm"]["final"]["response_id"]]["messages"]

    # ---- raw llama-cpp-python, same settings, same prompts, same order; no daemon running ----
    os.environ.update(daemon_env(root / "ours" / "home", **settings_env))
    raw_children: dict[str, dict | None] = {}
    job = {"messages": messages, "warm": warm_messages, "passes": args.passes}
    cells = [("default", "load"), ("PASSIVE", "idle"), ("PASSIVE", "load")] if args.grid else []
    for policy, load in cells:
        monitor.phase = f"raw_{policy}_{load}"
        raw_children[f"{policy}_{load}"] = run_raw_child(__file__, {**job, "load": load == "load"}, root,
                                                         f"raw_{policy}_{load}", None if policy == "default" else policy,
                                                         args.raw_timeout)
    # In this process, llama_cpp imported as the daemon imports it: libgomp's default policy.
    raw_passes_, raw_walls, raw_info = raw_passes(messages, warm_messages, args.passes, monitor)
    noise = monitor.stop()
    s = load_settings_for_report()

    # ---- figures ----
    seq, raw = best_runs(seq_passes), best_runs(raw_passes_)
    same_text = sum(r["final"]["answer"] == w["text"] for runs, wruns in zip(seq_passes, raw_passes_)
                    for r, w in zip(runs, wruns))
    seq_tokens = sum(r["token_events"] for r in seq_passes[-1])
    conc_tokens = sum(r["token_events"] for r in conc["runs"])
    seq_rps = [len(questions) / w for w in seq_walls]
    conc_rps = len(conc["runs"]) / conc["wall_s"]
    cmp = comparison(seq, raw)
    ratio_idle, added_p50 = cmp["tokens_per_s_ratio_ours_over_raw"], cmp["added_first_token_ms_p50"]
    peak = ours["memory_idle"]["peak_rss_mb"]
    noisy = [p for p in noise if p.startswith(("ours_", "raw", "before_")) and noise[p]["other_cores_mean"] >= 0.2]
    grid = {
        "ours (daemon)": {"idle": cell(seq_passes), "load": cell(ours.get("load"))},
        "ours beside an embedder process": {"idle": None, "load": cell(ours.get("external_load"))},
        "daemon before issue 12 (PASSIVE)": {"idle": cell(before and before["idle"]),
                                             "load": cell(before and before.get("load"))},
        "raw llama.cpp, libgomp default": {"idle": cell(raw_passes_),
                                           "load": child_cell(raw_children.get("default_load"))},
        "raw llama.cpp, PASSIVE": {"idle": child_cell(raw_children.get("PASSIVE_idle")),
                                   "load": child_cell(raw_children.get("PASSIVE_load"))},
    }
    ours_load, before_load = grid["ours (daemon)"]["load"], grid["daemon before issue 12 (PASSIVE)"]["load"]
    load_ratio = ratio(ours_load, before_load)
    results = {
        "setup": {
            "questions": len(questions), "passes": args.passes, "context_chunks": s.context_chunks,
            "clients": args.clients, "cpus": os.cpu_count(), "raw": raw_info,
            "daemon_settings": {k: v for k, v in ours["env"].items() if k.startswith("VAULT_AGENT_L")},
            "index": {k: ours["index"][k] for k in ("notes_indexed", "notes_total", "chunks")},
            "indexing_load": {"notes_added": args.load_notes, "ours": {k: ours.get(k) for k in (
                "index_at_start", "index_at_end")}, "before": before and {k: before.get(k) for k in (
                    "index_at_start", "index_at_end")}},
            "daemon_ready_s": ours["ready_s"], "daemon_exit_code": ours["exit_code"],
            "prompts_identical_across_passes": same_prompts,
            "identical_answers_ours_vs_raw": f"{same_text}/{len(questions) * args.passes}",
            "loadavg_before": [round(x, 2) for x in load_before], "waited_for_quiet": quiet,
            "other_busy_processes": sorted(set(noise_before + ours["noise_during"])),
            "other_cpu_load_by_phase": noise,
        },
        "method": "per question, the fastest of --passes passes (ours and raw alike); 'all_passes' has every run",
        "decode_grid": grid,
        "decode_grid_table": grid_table(grid),
        "ours": {**ours_figures(seq), "requests_per_s_by_pass": [round(x, 3) for x in seq_rps]},
        "raw_llama_cpp": {**raw_figures(raw), "OMP_WAIT_POLICY": raw_info["OMP_WAIT_POLICY"],
                          "requests_per_s_by_pass": [round(len(questions) / w, 3) for w in raw_walls]},
        "comparison": cmp,
        "all_passes": {
            "ours": ours_figures([r for runs in seq_passes for r in runs]),
            "raw_llama_cpp": raw_figures([r for runs in raw_passes_ for r in runs]),
            "comparison": comparison([r for runs in seq_passes for r in runs],
                                     [r for runs in raw_passes_ for r in runs]),
        },
        "concurrent": {
            "clients": args.clients,
            "completed": len(conc["runs"]),
            "errors": conc["errors"],
            "wall_s": round(conc["wall_s"], 2),
            "requests_per_s": round(conc_rps, 3),
            "aggregate_tokens_per_s": round(conc_tokens / conc["wall_s"], 1),
            "sequential_aggregate_tokens_per_s_last_pass": round(seq_tokens / seq_walls[-1], 1),
            "speedup_requests_per_s_vs_sequential_last_pass": round(conc_rps / seq_rps[-1], 3),
            "ttft_client_incl_queue": summary_ms(ttft(conc["runs"])),
            "note": "the daemon runs one generation at a time (generation_lock + RequestQueue); ~1x is expected",
        },
        "memory": {"daemon_before_indexing_load": ours["memory_idle"], "daemon_at_end": ours["memory"],
                   "bench_process_peak_rss_mb_raw_llama": peak_rss_mb()},
        "noisy_phases": noisy,
        "targets": {
            "measured_on_a_quiet_machine": not noisy,
            "tokens_per_s_ratio>=0.9 (idle, vs raw with libgomp's default)": {
                "value": ratio_idle, "result": "PASS" if ratio_idle >= 0.9 else "FAIL"},
            "indexing_load_tokens_per_s_ratio>=1.0 (vs the daemon before issue 12)": {
                "value": load_ratio, "result": None if load_ratio is None else "PASS" if load_ratio >= 1.0 else "FAIL"},
            "added_first_token_ms<100": {"value": added_p50, "result": "PASS" if added_p50 < 100 else "FAIL"},
            "daemon_peak_rss_mb<1536": {"value": peak, "result": "PASS" if peak and peak < 1536 else "FAIL"},
        },
    }
    print(results["decode_grid_table"])
    if args.keep:
        results["setup"]["home"] = str(root)
    else:
        shutil.rmtree(root, ignore_errors=True)
    write_result("serve_bench", results, args.out)


if __name__ == "__main__":
    main()
