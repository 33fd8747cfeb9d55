"""train_bench.py --rag: a default CPU retrain at real size, against the layout used before the
memory plan, and (--beside-daemon) beside a daemon answering a question every 10 s.

- Pairs: N preference pairs whose RAG prompts hold ~1,000 tokens of benchmarks/eval_vault notes
  (a documentation vault no one here wrote), chosen = an excerpt of the first note with [1],
  rejected = an excerpt of an unrelated note; written to a fresh preference log.
- before: the pre-plan layout (no checkpointing, reference pass every step, every position through
  the LM head, no allocator tuning) for --old-steps optimizer steps. Its default batch of 4 pairs at
  this length is what was OOM-killed at 24.3 GB, so it runs 2 pairs per micro-batch (x2
  accumulated): per token it is as fast, and it finishes.
- after: `vault-agent retrain --json` in a child with the product's defaults (promote off: the
  figure is the training), its peak RSS from the run's own summary, its stages timed from stderr.
- beside daemon: `vault-agent serve` on the sample vault with the bundled model; /ask latency for
  questions every 10 s while idle, then while the retrain runs (`--nice 10`, as the nightly child).
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
QUESTIONS = ["How do I recover a deleted file?", "What does the sync daemon do?", "How are plugins installed?",
             "Where is the configuration stored?", "How do I back up my notes?", "What is a callout?"]


def note_texts(vault: Path) -> list[tuple[str, str]]:
    out = []
    for p in sorted(vault.rglob("*.md")):
        text = re.sub(r"\s+", " ", p.read_text(errors="replace")).strip()
        if len(text) > 400:
            out.append((p.stem, text))
    return out


def make_pairs(n: int, prompt_tokens: int, tokenizer, seed: int = 0) -> list[dict]:
    """[{prompt, chosen, rejected}] with prompts of ~prompt_tokens tokens (chat template included)."""
    from vault_agent.llm.prompts import build_rag_messages

    notes = note_texts(HERE / "eval_vault")
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        picked = rng.sample(notes, len(notes))
        contexts = []
        for title, text in picked:
            contexts.append({"n": len(contexts) + 1, "note": f"{title}.md", "heading": "",
                             "text": text[:1400]})
            messages = build_rag_messages(f"{rng.choice(QUESTIONS)} (case {i})", contexts)
            templated = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            if len(tokenizer(templated, add_special_tokens=False)["input_ids"]) >= prompt_tokens:
                break
        words = picked[0][1].split()
        other = picked[-1][1].split()
        pairs.append({"prompt": messages, "chosen": " ".join(words[:90]) + " [1]",
                      "rejected": " ".join(other[:60])})
    return pairs


def write_log(db: Path, pairs: list[dict]) -> None:
    from vault_agent.feedback.store import PreferenceLog

    with PreferenceLog(db) as log:
        for i, p in enumerate(pairs):
            log.add_synthetic_pair(p["prompt"], p["chosen"], p["rejected"], origin_id=f"bench{i}:h")


OLD_LAYOUT = """
import json, sys, tempfile, time
sys.path.insert(0, {repo!r})
pairs, steps = json.load(open({pairs!r})), {steps}
import torch
from vault_agent.config import TrainSettings
from vault_agent.train.memory import peak_rss_gib
from vault_agent.train.dpo import make_plan, load_model, make_trainer
plan = make_plan(TrainSettings(), device="cpu")
plan.gradient_checkpointing = False
plan.precompute_ref_log_probs = False
plan.dpo["per_device_train_batch_size"], plan.dpo["gradient_accumulation_steps"] = 2, 2
import vault_agent.train.cpu_lean as lean
lean.apply = lambda plan: {{}}  # the layout before the plan: no lean CPU settings either
model, tok = load_model(plan, {location!r})
records = [{{"prompt": p["prompt"], "chosen": [{{"role": "assistant", "content": p["chosen"]}}],
            "rejected": [{{"role": "assistant", "content": p["rejected"]}}]}} for p in pairs[: 4 * steps]]
with tempfile.TemporaryDirectory() as work:
    t0 = time.perf_counter()
    trainer = make_trainer(plan, model, tok, records, work, max_steps=steps)
    t1 = time.perf_counter()
    result = trainer.train()
    t2 = time.perf_counter()
print(json.dumps({{"steps": result.global_step, "setup_s": round(t1 - t0, 1), "train_s": round(t2 - t1, 1),
                  "peak_rss_gib": peak_rss_gib()}}))
"""


def run_old(pairs_path: Path, location: str, steps: int, env: dict) -> dict:
    code = OLD_LAYOUT.format(repo=str(REPO), pairs=str(pairs_path), steps=steps, location=location)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=7200)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1],
                "returncode": proc.returncode}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["s_per_step"] = round(out["train_s"] / max(out["steps"], 1), 1)
    return out


def run_new(env: dict, nice: int = 0) -> dict:
    """The product's retrain; stage start times from its stderr lines."""
    cmd = [sys.executable, "-m", "vault_agent.cli", "retrain", "--json", "--limit-memory"]
    if nice:
        cmd += ["--nice", str(nice)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    stages, tail = {}, []
    for line in proc.stderr:
        if line.startswith("retrain: "):
            stages[line.strip()[len("retrain: "):]] = round(time.perf_counter() - t0, 1)
        tail = (tail + [line.rstrip()])[-5:]
    out = proc.stdout.read()
    proc.wait()
    total = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": tail[-1] if tail else f"exit {proc.returncode}", "returncode": proc.returncode}
    summary = json.loads(out)
    train_from = stages.get("training", 0.0)
    return {"steps": summary["steps"], "pairs_train": summary["pairs"]["train"], "memory": summary["memory"],
            "memory_limit_gib": summary.get("memory_limit_gib"), "prompts_cut": summary.get("prompts_cut"),
            "too_long_left_out": summary.get("too_long_left_out"), "stages_s": stages,
            "train_stage_s": round(total - train_from, 1), "total_s": round(total, 1),
            "s_per_step_incl_setup": round((total - train_from) / max(summary["steps"], 1), 1),
            "plan": {k: summary["plan"][k] for k in ("gradient_checkpointing", "precompute_ref_log_probs")}
            | {"micro_batch": summary["plan"]["dpo"]["per_device_train_batch_size"],
               "accumulation": summary["plan"]["dpo"]["gradient_accumulation_steps"]}}


def ask_loop(daemon, stop: threading.Event, every: float, out: list, limit: int | None = None) -> None:
    """One question every `every` s until `stop` (or `limit` answers): (seconds, ok) per answer."""
    with daemon.client(timeout=300) as http:
        i = 0
        while not stop.is_set() and (limit is None or i < limit):
            t0 = time.perf_counter()
            try:
                ok = http.post("/ask", json={"question": QUESTIONS[i % len(QUESTIONS)]}).status_code == 200
            except Exception:  # noqa: BLE001 - a failed answer is the figure
                ok = False
            out.append((time.perf_counter() - t0, ok))
            i += 1
            if limit is None or i < limit:
                stop.wait(max(0.0, every - (time.perf_counter() - t0)))


def beside_daemon(env: dict, idle_questions: int, every: float) -> dict:
    from _common import percentile
    from _daemon import DaemonProcess

    home = Path(env["VAULT_AGENT_HOME"]).parent / "daemon-home"
    daemon = DaemonProcess(REPO / "sample_vault", home).start()
    try:
        idle: list = []
        ask_loop(daemon, threading.Event(), every, idle, limit=idle_questions)  # the same cadence, alone
        busy: list = []
        stop = threading.Event()
        asker = threading.Thread(target=ask_loop, args=(daemon, stop, every, busy))
        asker.start()
        new = run_new(env, nice=10)  # as the nightly child runs
        stop.set()
        asker.join()
    finally:
        daemon.stop()

    def figures(rows):
        secs = [s for s, ok in rows if ok]
        return {"answers": len(rows), "failed": sum(not ok for _, ok in rows),
                "p50_s": round(percentile(secs, 50), 2), "p95_s": round(percentile(secs, 95), 2)}

    i, b = figures(idle), figures(busy)
    return {"idle": i, "during_retrain": b, "p95_ratio": round(b["p95_s"] / i["p95_s"], 2) if i["p95_s"] else None,
            "retrain": new}


def run(args) -> dict:
    from transformers import AutoTokenizer

    from vault_agent.config import load_settings
    from vault_agent.paths import app_dirs
    from vault_agent.train.base import materialise, resolve_base

    work = Path(tempfile.mkdtemp(prefix="rag-retrain-"))
    home = work / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_AGENT_")}
    env.update({"VAULT_AGENT_HOME": str(home), "HF_HUB_OFFLINE": "1", "VAULT_AGENT_TRAIN__PROMOTE": "false",
                "PYTHONPATH": str(REPO)})
    if args.epochs:
        env["VAULT_AGENT_TRAIN__EPOCHS"] = str(args.epochs)
    os.environ.update({"VAULT_AGENT_HOME": str(home), "HF_HUB_OFFLINE": "1"})
    settings = load_settings()
    location = materialise(resolve_base(settings.train, settings.llm, app_dirs().ensure()))
    tokenizer = AutoTokenizer.from_pretrained(location)
    pairs = make_pairs(args.pairs, args.prompt_tokens, tokenizer)
    lengths = [len(tokenizer(tokenizer.apply_chat_template(p["prompt"] + [{"role": "assistant", "content": a}],
                                                           tokenize=False), add_special_tokens=False)["input_ids"])
               for p in pairs for a in (p["chosen"], p["rejected"])]
    # the old layout gets the prompts cut as the retrain cuts them: before the plan, TRL dropped
    # every pair whose prompt alone filled max_length, which at this size is all of them
    from vault_agent.train.truncate import fit_prompt

    fitted = [{**p, "prompt": fit_prompt(tokenizer, p["prompt"], [p["chosen"], p["rejected"]],
                                         settings.train.max_length).prompt} for p in pairs]
    pairs_path = work / "pairs.json"
    pairs_path.write_text(json.dumps(fitted))
    write_log(home / "data" / "preferences.sqlite", pairs)
    out: dict = {"pairs": args.pairs, "sequence_tokens": {"mean": round(sum(lengths) / len(lengths)),
                                                          "max": max(lengths)}}
    tokens_per_step = sum(lengths) / len(pairs) * 4  # chosen + rejected of 4 pairs (train.batch_size)
    if args.old_steps:
        old = run_old(pairs_path, location, args.old_steps, env)
        out["before_layout"] = old
        if "s_per_step" in old:
            old["tokens_per_s"] = round(tokens_per_step / old["s_per_step"], 1)
    if args.beside_daemon:
        out["beside_daemon"] = beside_daemon(env, args.idle_questions, args.every)
        new = out["beside_daemon"]["retrain"]
    else:
        new = run_new(env)
    out["retrain"] = new
    if "steps" in new:
        new["tokens_per_s_incl_setup"] = round(tokens_per_step / new["s_per_step_incl_setup"], 1)
        old = out.get("before_layout", {})
        if "tokens_per_s" in old:
            out["tokens_per_s_ratio_new_over_before"] = round(new["tokens_per_s_incl_setup"] / old["tokens_per_s"], 2)
    return out
