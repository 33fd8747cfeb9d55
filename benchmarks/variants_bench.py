"""Which training signal and loss variant to use by default: plain DPO, DPO + SFT term, dynamic beta
(beta-DPO), source margins, and KTO on single thumbs, each trained from the same base on the same
sample-vault pairs and judged on the same held-out split.

Per variant: held-out preference accuracy and margin, KL to the base and perplexity change (the
llama.cpp gate's scoring, train/gate.py), fact coverage on the eval question file (`vault-agent eval`,
cli/eval.py), and training time.

Data (built once, cached under --workdir): the sample vault, indexed; synthetic pairs from
`vault-agent pairs generate` (one context chunk per prompt, so they fit a short max_length); and the
user-style pairs the tests build (tests/test_train.py seed_pairs, tests/test_pairs_export.py seed_log:
RAG answers, corrections, thumbs). KTO's row trains on a log of single thumbs made from the same
training pairs, one thumb per question (alternately up on the chosen answer or down on the rejected
one), with no pairs in it: what a user who only clicks thumbs leaves behind.

    python benchmarks/variants_bench.py            # ~20-30 min on 2 cores (short max_length, few steps)
    python benchmarks/variants_bench.py --steps 24 --max-length 768 --synthetic 48 --questions 40   # bigger
    python benchmarks/variants_bench.py --smoke    # tiny: 1 step per variant, 1 question (the test suite)

A variant whose code is not in this build records its error in its row; the others still run.
Writes benchmarks/results/variants_bench[_smoke].json and prints one Markdown table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _common import RESULTS, peak_rss_mb, write_result  # noqa: E402

QUESTIONS = REPO / "benchmarks" / "questions" / "sample_vault.jsonl"
# DPO rows switch the SFT term off unless it is the row's point (train.sft_weight defaults to 1.0)
VARIANTS = {
    "dpo": {"label": "plain DPO", "train": {"method": "dpo", "sft_weight": 0.0}},
    "dpo_sft": {"label": "DPO + SFT term", "train": {"method": "dpo", "sft_weight": 1.0},
                "needs": "vault_agent.train.variants"},
    "dynamic_beta": {"label": "dynamic beta", "train": {"method": "dpo", "sft_weight": 0.0, "dynamic_beta": True},
                     "needs": "vault_agent.train.variants"},
    "margin": {"label": "source margins", "needs": "vault_agent.train.variants",
               "train": {"method": "dpo", "sft_weight": 0.0,
                         "source_margins": {"correction": 0.5, "comparison": 0.5, "rating": 0.25, "synthetic": 0.0}}},
    "kto": {"label": "KTO, thumbs only", "train": {"method": "kto", "sft_weight": 0.0}, "needs": "vault_agent.train.kto",
            "log": "thumbs"},
}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny run for the test suite (figures mean nothing)")
    ap.add_argument("--workdir", type=Path, help="where data is cached and runs live "
                                                 "(default benchmarks/results/variants_work[_smoke])")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {','.join(VARIANTS)}")
    ap.add_argument("--synthetic", type=int, help="chunks `pairs generate` tries, once per workdir (default 24)")
    ap.add_argument("--steps", type=int, help="optimizer steps per variant (default 8)")
    ap.add_argument("--batch-size", type=int, help="pairs (KTO: answers) per step (default 2)")
    ap.add_argument("--max-length", type=int, help="train.max_length; longer pairs are left out (default 512)")
    ap.add_argument("--learning-rate", type=float, default=2e-4)
    ap.add_argument("--questions", type=int, help="eval questions, from the top of the file (default 6)")
    ap.add_argument("--answer-tokens", type=int, help="llm.max_tokens for the eval answers (default 128)")
    ap.add_argument("--chunks", type=int, help="held-out vault chunks for the perplexity figure (default 8, the gate's)")
    ap.add_argument("--out", help="JSON path (default benchmarks/results/variants_bench[_smoke].json)")
    args = ap.parse_args(argv)
    small = args.smoke
    for name, normal, smoke in (("synthetic", 24, 0), ("steps", 8, 1), ("batch_size", 2, 1), ("max_length", 512, 256),
                                ("questions", 6, 1), ("answer_tokens", 128, 16), ("chunks", 8, 2)):
        if getattr(args, name) is None:
            setattr(args, name, smoke if small else normal)
    args.workdir = (args.workdir or RESULTS / ("variants_work_smoke" if small else "variants_work")).resolve()
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        ap.error(f"unknown variant(s) {', '.join(sorted(unknown))}; choose from {', '.join(VARIANTS)}")
    args.variants = [v for v in VARIANTS if v in args.variants.split(",")]
    return args


def _env(home: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_AGENT_")}
    env.update({"VAULT_AGENT_HOME": str(home), "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))})
    env.update(extra)
    return env


def _cli(home: Path, *args: str, timeout: int = 3600, **env: str) -> str:
    done = subprocess.run([sys.executable, "-m", "vault_agent.cli", *args], env=_env(home, **env), capture_output=True,
                          text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"vault-agent {' '.join(args)} failed: {(done.stderr or done.stdout)[-1500:]}")
    return done.stdout


def _dirs(home: Path):
    from vault_agent.paths import AppDirs

    return AppDirs(config=home / "config", data=home / "data", state=home / "state").ensure()


# --- data, built once per workdir ----------------------------------------------------------------

def prepare(args) -> dict:
    """The vault copy, its index and the pairs log (synthetic + test-helper user pairs) in the
    'prep' home, and the materialised training base; reused when already there."""
    work = args.workdir
    prep = work / "prep"
    done = prep / "prepared.json"
    if done.is_file():
        info = json.loads(done.read_text())
        if info.get("synthetic_limit") == args.synthetic:
            return info
        shutil.rmtree(prep)
    prep.mkdir(parents=True, exist_ok=True)
    vault = prep / "vault"
    shutil.copytree(REPO / "sample_vault", vault)
    home = prep / "home"
    dirs = _dirs(home)
    started = time.perf_counter()
    _cli(home, "index", "--vault", str(vault))
    if args.synthetic:
        # one retrieved chunk per prompt keeps the pairs short enough for a short train.max_length
        _cli(home, "pairs", "generate", "--vault", str(vault), "--limit", str(args.synthetic),
             VAULT_AGENT_LLM__CONTEXT_CHUNKS="1", VAULT_AGENT_VAULT=str(vault))
    synthetic = _count_pairs(dirs.preference_db)
    _seed_user_pairs(dirs.preference_db)
    from vault_agent.config import Settings
    from vault_agent.train.base import materialise, resolve_base

    base = materialise(resolve_base(Settings(vault=vault).train, Settings(vault=vault).llm, dirs))
    info = {"vault": str(vault), "home": str(home), "base": str(base), "synthetic_limit": args.synthetic,
            "pairs": _count_pairs(dirs.preference_db), "synthetic_pairs": synthetic,
            "prepare_seconds": round(time.perf_counter() - started, 1)}
    done.write_text(json.dumps(info, indent=2))
    return info


def _count_pairs(db: Path) -> dict:
    import sqlite3

    if not db.is_file():
        return {}
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT source, count(*) FROM pairs GROUP BY source").fetchall())


def _seed_user_pairs(db: Path) -> None:
    """The user-style feedback the tests build: RAG answers with corrections and thumbs."""
    sys.path.insert(0, str(REPO / "tests"))
    from test_pairs_export import seed_log
    from test_train import seed_pairs

    seed_pairs(db).close()
    seed_log(db).close()


def thumbs_only_log(pairs: list, out_db: Path) -> int:
    """A log holding only single thumbs: one per question, alternately up on a chosen answer and
    down on a rejected one, so no two opposite thumbs meet on a question (which would make a pair)."""
    from vault_agent.feedback.store import PreferenceLog

    by_question: dict[str, list] = {}
    for p in pairs:
        question = next((m["content"] for m in reversed(p.prompt) if m["role"] == "user"), "")
        by_question.setdefault(question, []).append(p)
    n = 0
    with PreferenceLog(out_db) as log:
        for i, (question, group) in enumerate(sorted(by_question.items())):
            up = i % 2 == 0
            for p in group:
                rid = log.record_response(question=question, prompt=question, messages=p.prompt,
                                          answer=p.chosen if up else p.rejected, retrieved=[], citations=[],
                                          model_id="bench", adapter_version=None, timings={})
                log.rate(rid, 1 if up else -1)
                n += 1
    return n


# --- one variant ---------------------------------------------------------------------------------

def train_variant(name: str, args, prep: dict, heldout_ids: set[str]) -> dict:
    spec = VARIANTS[name]
    row = {"variant": name, "label": spec["label"], "settings": spec["train"]}
    if spec.get("needs") and importlib.util.find_spec(spec["needs"]) is None:
        row["error"] = f"not in this build ({spec['needs']} is missing)"
        return row
    home = args.workdir / "runs" / name
    shutil.rmtree(home, ignore_errors=True)
    dirs = _dirs(home)
    try:
        from vault_agent.config import Settings
        from vault_agent.train import dataset as ds
        from vault_agent.train.export import export_gguf_lora
        from vault_agent.train.retrain import retrain

        if spec.get("log") == "thumbs":
            pairs, _ = ds.read_pairs(Path(prep["home"]) / "data" / "preferences.sqlite")
            row["thumbs"] = thumbs_only_log([p for p in pairs if p.id not in heldout_ids], dirs.preference_db)
        else:
            shutil.copy2(Path(prep["home"]) / "data" / "preferences.sqlite", dirs.preference_db)
        settings = Settings(vault=Path(prep["vault"]), train={
            **spec["train"], "base_model": prep["base"], "promote": False, "max_length": args.max_length,
            "batch_size": args.batch_size, "learning_rate": args.learning_rate, "min_pairs": 2, "epochs": 1.0})
        started = time.perf_counter()
        summary = retrain(settings, dirs, trainer_overrides={"max_steps": args.steps})
        row["train_seconds"] = round(time.perf_counter() - started, 1)
        row.update(steps=summary.steps, train_loss=summary.train_loss, method=summary.method,
                   variants=summary.variants, too_long_left_out=summary.too_long_left_out)
        if spec.get("needs") == "vault_agent.train.variants" and not summary.variants:
            row["error"] = "the retrain summary says no DPO variant ran (is the variants code merged?)"
            return row
        vdir = Path(summary.path)
        export_gguf_lora(vdir / "adapter", _base_gguf(), vdir / "adapter.gguf")
        row["gguf"] = str(vdir / "adapter.gguf")
    except Exception as exc:  # noqa: BLE001 - a failed row is that row's error; the bench goes on
        row["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        row["traceback"] = traceback.format_exc()[-2000:]
    return row


def _base_gguf() -> Path:
    from vault_agent.llm.backend import resolve_model_path

    return resolve_model_path("bundled")


# --- judging all rows ----------------------------------------------------------------------------

def gate_scores(rows: list[dict], heldout: list, prep: dict, chunks: int) -> dict:
    """The gate's figures for the base and every trained variant, in one llama.cpp context."""
    from vault_agent.config import Settings
    from vault_agent.train.gate import score_all
    from vault_agent.train.promote import heldout_chunks

    trained = [r for r in rows if r.get("gguf")]
    settings = Settings(vault=Path(prep["vault"]))
    texts = heldout_chunks(settings, Path(prep["vault"]), chunks)
    started = time.perf_counter()
    scores = score_all(_base_gguf(), [(None, None)] + [(r["variant"], Path(r["gguf"])) for r in trained],
                       [p.record() for p in heldout], texts, settings.llm.n_ctx)
    base = scores[0]
    for r, s in zip(trained, scores[1:]):
        r.update(heldout_accuracy=s.accuracy, heldout_margin=s.margin, kl_to_base=s.kl_to_base,
                 perplexity=s.perplexity, heldout_pairs=s.pairs)
        if s.perplexity and base.perplexity:
            r["perplexity_change_pct"] = round(100 * (s.perplexity / base.perplexity - 1), 2)
    return {"heldout_accuracy": base.accuracy, "heldout_margin": base.margin, "perplexity": base.perplexity,
            "heldout_pairs": base.pairs, "skipped": base.skipped, "chunks": len(texts),
            "seconds": round(time.perf_counter() - started, 1)}


def eval_coverage(rows: list[dict], args, prep: dict) -> dict:
    """`vault-agent eval` over the first --questions questions, the base and each variant as columns."""
    from vault_agent.train import registry

    home = Path(prep["home"])
    adapters = registry.adapters_dir(_dirs(home))
    shutil.rmtree(adapters, ignore_errors=True)
    trained = [r for r in rows if r.get("gguf")]
    specs = ["none"]
    for i, r in enumerate(trained, 1):
        version = f"v{i:04d}"
        (adapters / version).mkdir(parents=True)
        shutil.copy2(r["gguf"], adapters / version / "adapter.gguf")
        r["eval_version"] = version
        specs.append(version)
    subset = args.workdir / "questions.jsonl"
    subset.write_text("".join(QUESTIONS.read_text().splitlines(keepends=True)[:args.questions]))
    started = time.perf_counter()
    out = _cli(home, "eval", "--questions", str(subset), "--vault", prep["vault"], "--json",
               *[a for s in specs for a in ("--adapter", s)], VAULT_AGENT_LLM__MAX_TOKENS=str(args.answer_tokens))
    report = json.loads(out)
    for r in trained:
        r["fact_coverage"] = report["summary"][r["eval_version"]]["fact_coverage"]
    return {"fact_coverage": report["summary"]["none"]["fact_coverage"], "questions": args.questions,
            "recall_at_5": report["summary"]["none"]["recall_at_5"], "seconds": round(time.perf_counter() - started, 1)}


def _fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def markdown(rows: list[dict], base: dict, evals: dict) -> str:
    lines = ["| variant | held-out acc | margin | KL to base | perplexity | fact coverage | train s | steps |",
             "|---|---|---|---|---|---|---|---|",
             f"| base (no adapter) | {_fmt(base.get('heldout_accuracy'), '.2f')} | {_fmt(base.get('heldout_margin'), '+.3f')} "
             f"| 0 | {_fmt(base.get('perplexity'), '.2f')} | {_fmt(evals.get('fact_coverage'), '.2f')} | | |"]
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['label']} | error: {r['error']} | | | | | | |")
            continue
        ppl = f"{_fmt(r.get('perplexity'), '.2f')} ({_fmt(r.get('perplexity_change_pct'), '+.1f')}%)"
        lines.append(f"| {r['label']} | {_fmt(r.get('heldout_accuracy'), '.2f')} | {_fmt(r.get('heldout_margin'), '+.3f')} "
                     f"| {_fmt(r.get('kl_to_base'), '.4f')} | {ppl} | {_fmt(r.get('fact_coverage'), '.2f')} "
                     f"| {_fmt(r.get('train_seconds'), '.0f')} | {r.get('steps')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    prep = prepare(args)
    from vault_agent.config import Settings
    from vault_agent.train import dataset as ds

    pairs, skipped = ds.read_pairs(Path(prep["home"]) / "data" / "preferences.sqlite")
    split = ds.build(pairs, Settings().train, skipped)  # the split every DPO row's retrain makes too
    heldout_ids = {p.id for p in split.heldout}
    rows = []
    for name in args.variants:
        print(f"training {name} ...", file=sys.stderr, flush=True)
        rows.append(train_variant(name, args, prep, heldout_ids))
        print(f"  {rows[-1].get('error') or 'done in %.0f s' % rows[-1]['train_seconds']}", file=sys.stderr, flush=True)
    base, evals = {}, {}
    if any(r.get("gguf") for r in rows):
        print("scoring with llama.cpp ...", file=sys.stderr, flush=True)
        base = gate_scores(rows, split.heldout, prep, args.chunks)
        print("eval questions ...", file=sys.stderr, flush=True)
        evals = eval_coverage(rows, args, prep)
    table = markdown(rows, base, evals)
    result = {
        "config": {"smoke": args.smoke, "variants": args.variants, "synthetic_limit": args.synthetic,
                   "steps": args.steps, "batch_size": args.batch_size, "max_length": args.max_length,
                   "learning_rate": args.learning_rate, "eval_questions": args.questions,
                   "answer_tokens": args.answer_tokens, "chunks": args.chunks, "cores": os.cpu_count(), "workdir": str(args.workdir)},
        "data": {"pairs": prep["pairs"], "synthetic_pairs": prep["synthetic_pairs"], "train_pairs": len(split.train),
                 "heldout_pairs": len(split.heldout), "prepare_seconds": prep["prepare_seconds"]},
        "base": base, "eval": evals, "rows": [{k: v for k, v in r.items() if k != "gguf"} for r in rows],
        "table": table, "peak_rss_mb": peak_rss_mb(), "seconds": round(time.perf_counter() - started, 1),
    }
    print(table)
    write_result("variants_bench_smoke" if args.smoke else "variants_bench", result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
