"""Does a retrain move answers, and which recipe moves them most? (issue: a retrain earns its promotion)

For one vault (benchmarks/eval_vault, a documentation vault no one here wrote, or sample_vault):
- index it; split its usable chunks by a hash of their id: a fifth become *unseen questions* (never
  paired, never trained on), the rest are the chunks synthetic pairs are made from;
- unseen questions: the bundled model writes a question for each held-out chunk (heading question
  as fallback), retrieval as served finds the notes, and the answer is scored as the gate's
  answer check scores it (train/answer_check.py): share of the chunk's key terms, and whether it
  cites the chunk's note by its [n];
- per recipe (pair rules x training knobs): synthetic pairs from the other chunks (cached per pair
  rule), `retrain` (promote off), GGUF export, the same questions answered with the adapter, and
  perplexity on the held-out chunks with and without it.
Rows are written after each recipe: a rerun skips the recipes already in the output (resumable).

    python benchmarks/learning_bench.py --smoke                  # minutes: 1 recipe, 6 pairs
    python benchmarks/learning_bench.py --vault npm-docs        # the sweep (hours on 2 cores)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from _common import RESULTS, peak_rss_mb  # noqa: E402

# npm-docs: npm's own documentation (91 pages), shipped with Node on this machine: a real vault no one
# here wrote, and big enough for 60-80 pairs plus unseen questions (eval_vault has 43 usable chunks)
VAULTS = {"eval": HERE / "eval_vault", "sample": HERE.parent / "sample_vault",
          "npm-docs": Path("/usr/lib/node_modules/npm/docs/content")}
# name -> (pair rule, training knobs); the defaults row is what a user gets
RECIPES = {
    "defaults": {"chosen": "model", "min_overlap": 0.3},
    "model-lr5e-5": {"chosen": "model", "min_overlap": 0.3, "learning_rate": 5e-5},  # the default before the sweep
    "grounded": {"chosen": "grounded", "min_overlap": 0.3},
    "grounded-lr2e-4": {"chosen": "grounded", "min_overlap": 0.3, "learning_rate": 2e-4},
    "model-no-overlap-rule": {"chosen": "model", "min_overlap": 0.0},
    "grounded-beta0.3": {"chosen": "grounded", "min_overlap": 0.3, "beta": 0.3},
    "grounded-3ep": {"chosen": "grounded", "min_overlap": 0.3, "epochs": 3.0},
    # the keep rules drop about half the model's chosen answers: more chunks tried for 60-80 pairs
    "model-140": {"chosen": "model", "min_overlap": 0.3, "chunks": 140},
    # cheaper adapters to serve (benchmarks/adapter_decode_bench.py): do they learn as much?
    "defaults-attention": {"chosen": "model", "min_overlap": 0.3,
                           "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
    "defaults-qv": {"chosen": "model", "min_overlap": 0.3, "target_modules": ["q_proj", "v_proj"]},
}
TRAIN_KNOBS = ("learning_rate", "epochs", "beta", "target_modules", "lora_r")


def is_unseen(chunk_id: str) -> bool:
    return int(hashlib.sha256(chunk_id.encode()).hexdigest(), 16) % 5 == 0


def settings_for(vault: Path, args, **train):
    from vault_agent.config import load_settings

    s = load_settings(vault=vault)
    # the bench scores on its own unseen questions: every pair it made may train
    t = s.train.model_copy(update={"max_length": args.max_length, "promote": False, "min_pairs": 2, "method": "dpo",
                                   "heldout_fraction": 0.0, **train})
    llm = s.llm.model_copy(update={"context_chunks": args.context_chunks})
    return s.model_copy(update={"train": t, "llm": llm})


def make_probes(indexer, backend, settings, chunks, limit: int):
    """Unseen questions, asked as the daemon asks them (retrieval decides which notes the prompt holds)."""
    from vault_agent.llm.prompts import build_rag_messages
    from vault_agent.train import answer_check, synthetic

    fit = synthetic.context_fitter(backend, synthetic.ANSWER_TOKENS)
    retrieve = synthetic.indexer_retriever(indexer, settings.llm.context_chunks)
    probes = []
    for chunk in chunks[:limit]:
        asked = backend.chat([{"role": "system", "content": synthetic.QUESTION_SYSTEM},
                              {"role": "user", "content": f"Note: {chunk.path} > {chunk.heading}\n\n{chunk.text}"}],
                             max_tokens=synthetic.QUESTION_TOKENS, temperature=0.0, seed=0)
        question = synthetic.clean_question(asked, chunk) or synthetic.heading_question(chunk)
        contexts = fit([{**c, "n": n} for n, c in enumerate(retrieve(question), 1)])
        messages = build_rag_messages(question, contexts)
        terms = answer_check.key_terms(chunk.text, question)
        if terms:
            probes.append(answer_check.Probe(chunk.id, question, messages, chunk.path,
                                             answer_check.source_numbers(messages, chunk.path), terms))
    return probes


def pairs_db(work: Path, recipe: dict, settings, indexer, backend, chunks, n_pairs: int) -> tuple[Path, dict]:
    """The synthetic pairs for this pair rule from `n_pairs` chunks tried (made once, reused by every
    recipe with the same rule). A larger count starts from the largest smaller one made with the same
    rule and tries that many more chunks (the sample order is the same: balanced_sample is
    deterministic), so growing the pair count costs only the new chunks."""
    from vault_agent.feedback.store import PreferenceLog
    from vault_agent.train import synthetic
    from vault_agent.train.keep_rules import KeepRules

    rule = f"{recipe['chosen']}-{recipe['min_overlap']}"
    db = work / "pairs" / f"{rule}-{n_pairs}.sqlite"
    meta = db.with_suffix(".json")
    if meta.is_file():
        return db, json.loads(meta.read_text())
    db.parent.mkdir(parents=True, exist_ok=True)
    smaller = sorted((int(m.stem.rsplit("-", 1)[1]), m) for m in db.parent.glob(f"{rule}-*.json")
                     if int(m.stem.rsplit("-", 1)[1]) < n_pairs)
    earlier, tried = {"kept": 0, "dropped": {}, "chunks_seen": 0, "questions_from_heading": 0, "seconds": 0.0}, set()
    if smaller:
        n_before, before_meta = smaller[-1]
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{before_meta.with_suffix('.sqlite')}{suffix}")
            if src.is_file():
                shutil.copy(src, f"{db}{suffix}")
        earlier = json.loads(before_meta.read_text())
        tried = {c.id for c in synthetic.balanced_sample(chunks, n_before, 0)}  # chunks: all usable already
    llm = settings.llm
    gen = lambda m, n: backend.chat(m, max_tokens=n, temperature=llm.temperature, seed=llm.seed)  # noqa: E731
    t0 = time.perf_counter()
    with PreferenceLog(db) as log:
        summary = synthetic.generate_pairs([c for c in chunks if c.id not in tried], log, gen,
                                           synthetic.indexer_retriever(indexer, llm.context_chunks),
                                           limit=n_pairs - earlier["chunks_seen"], seed=0,
                                           context_chunks=llm.context_chunks,
                                           fit=synthetic.context_fitter(backend, synthetic.ANSWER_TOKENS),
                                           rules=KeepRules(recipe["chosen"], recipe["min_overlap"]))
    info = summary.to_dict()
    for key in ("kept", "chunks_seen", "questions_from_heading"):
        info[key] += earlier[key]
    info["dropped"] = {k: v + earlier["dropped"].get(k, 0) for k, v in info["dropped"].items()}
    info["dropped_total"] = sum(info["dropped"].values())
    info["seconds"] = round(time.perf_counter() - t0 + earlier["seconds"], 1)
    meta.write_text(json.dumps(info))
    return db, info


def run_recipe(name: str, recipe: dict, args, vault: Path, work: Path, probes, base_scores, texts, ctx) -> dict:
    from vault_agent.llm.backend import resolve_model_path
    from vault_agent.paths import app_dirs
    from vault_agent.train import answer_check, gate
    from vault_agent.train.export import export_gguf_lora
    from vault_agent.train.retrain import retrain

    db, pair_info = pairs_db(work, recipe, ctx["settings"], ctx["indexer"], ctx["backend"], ctx["train_chunks"],
                             recipe.get("chunks", args.pairs))
    home = work / "runs" / name
    shutil.rmtree(home, ignore_errors=True)
    os.environ["VAULT_AGENT_HOME"] = str(home)
    dirs = app_dirs().ensure()
    shutil.copy(db, dirs.preference_db)
    base_cache = work / "train-base"  # the materialised base, shared by every run
    (dirs.data / "train-base").parent.mkdir(parents=True, exist_ok=True)
    base_cache.mkdir(parents=True, exist_ok=True)
    (dirs.data / "train-base").symlink_to(base_cache, target_is_directory=True)
    settings = settings_for(vault, args, epochs=args.epochs, **{k: recipe[k] for k in TRAIN_KNOBS if k in recipe})
    t0 = time.perf_counter()
    result = retrain(settings, dirs)
    train_s = time.perf_counter() - t0
    vdir = dirs.data / "adapters" / result.version
    gguf = resolve_model_path(settings.llm.model_path)
    export_gguf_lora(vdir / "adapter", gguf, vdir / "adapter.gguf")
    (adapted,) = answer_check.answer_probes(settings.llm, [(name, vdir / "adapter.gguf")], probes)
    check = answer_check.compare(adapted, base_scores)
    base_ppl, adapter_ppl = (s.perplexity for s in gate.score_all(gguf, [(None, None), (name, vdir / "adapter.gguf")],
                                                                   [], texts, settings.llm.n_ctx))
    figures = check.to_dict()
    return {"recipe": name, **recipe, "epochs": settings.train.epochs,
            "learning_rate": settings.train.learning_rate, "beta": settings.train.beta,
            "target_modules": settings.train.target_modules, "lora_r": settings.train.lora_r,
            "pairs": pair_info, "train_pairs": result.pairs, "steps": result.steps, "train_seconds": round(train_s, 1),
            "heldout": result.heldout, "peak_rss_gib": (result.memory or {}).get("peak_rss_gib"),
            "fact_coverage": {"base": figures["active"]["fact_coverage"], "adapter": figures["candidate"]["fact_coverage"],
                              "change": figures["coverage_change"]},
            "cites_source": {"base": figures["active"]["cites_source"], "adapter": figures["candidate"]["cites_source"],
                             "change": figures["citation_change"]},
            "perplexity": {"base": base_ppl, "adapter": adapter_ppl,
                           "rise_pct": round(100 * (adapter_ppl / base_ppl - 1), 2) if base_ppl and adapter_ppl else None},
            "gate_answer_shortfalls": check.shortfalls}


def table(rows: list[dict]) -> str:
    head = f"{'recipe':24} {'pairs':>5} {'steps':>5} {'facts base->adapter (change)':>30} {'cites base->adapter':>20} {'ppl rise':>8}"
    lines = [head]
    for r in rows:
        f, c = r["fact_coverage"], r["cites_source"]
        lines.append(f"{r['recipe']:24} {r['pairs']['kept']:>5} {r['steps'] or 0:>5} "
                     f"{f['base']:.3f}->{f['adapter']:.3f} ({f['change']['mean']:+.3f}) {c['base']:.2f}->{c['adapter']:.2f}"
                     f"{'':>6} {r['perplexity']['rise_pct']:+.1f}%")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vault", default="eval", help=f"{', '.join(sorted(VAULTS))}, or a vault folder")
    ap.add_argument("--smoke", action="store_true", help="1 recipe, 6 pairs, 3 questions, short prompts")
    ap.add_argument("--pairs", type=int, default=80, help="chunks tried for synthetic pairs (a recipe may set its own "
                    "`chunks`); the keep rules drop some, so fewer pairs are kept")
    ap.add_argument("--questions", type=int, default=20, help="unseen questions (held-out chunks)")
    ap.add_argument("--epochs", type=float, default=None, help="default: train.epochs (a recipe may set its own)")
    ap.add_argument("--max-length", type=int, default=768)
    ap.add_argument("--context-chunks", type=int, default=2)
    ap.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated names: " + ", ".join(RECIPES))
    ap.add_argument("--work", type=Path, default=None, help="work dir (index, pairs, runs); default under results/")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.smoke:
        args.pairs, args.questions, args.max_length, args.context_chunks = 6, 3, 256, 1
        args.recipes, args.epochs = "defaults", 1.0
    vault = VAULTS.get(args.vault, Path(args.vault)).resolve()
    if not vault.is_dir():
        ap.error(f"no vault folder at {vault}")
    tag = f"learning-{args.vault if args.vault in VAULTS else vault.name}{'-smoke' if args.smoke else ''}"
    work = args.work or RESULTS / "work" / tag
    out = Path(args.out) if args.out else RESULTS / f"{tag}.json"
    done = json.loads(out.read_text()) if out.is_file() else {"rows": []}
    names = [n for n in args.recipes.split(",") if n not in {r["recipe"] for r in done["rows"]}]

    os.environ["VAULT_AGENT_HOME"] = str(work / "index-home")
    from vault_agent.index.indexer import Indexer
    from vault_agent.llm.backend import LlamaBackend
    from vault_agent.paths import app_dirs
    from vault_agent.train import answer_check, synthetic

    settings = settings_for(vault, args)
    if args.epochs is None:
        args.epochs = settings.train.epochs
    indexer = Indexer(settings, vault, app_dirs().ensure())
    indexer.reconcile()
    usable = [c for c in synthetic.catalog_chunks(indexer.catalog) if synthetic.skip_reason(c.text) is None]
    unseen = [c for c in usable if is_unseen(c.id)]
    train_chunks = [c for c in usable if not is_unseen(c.id)]
    probes_file = work / "probes.json"
    with LlamaBackend(settings.llm) as backend:
        if probes_file.is_file():
            probes = [answer_check.Probe(**p) for p in json.loads(probes_file.read_text())]
        else:
            probes = make_probes(indexer, backend, settings, unseen, args.questions)
            probes_file.parent.mkdir(parents=True, exist_ok=True)
            probes_file.write_text(json.dumps([p.__dict__ for p in probes]))
        ctx = {"settings": settings, "indexer": indexer, "backend": backend, "train_chunks": train_chunks}
        (base_scores,) = answer_check.answer_probes(settings.llm, [(None, None)], probes)
        texts = [c.text for c in unseen]
        started = time.perf_counter()
        for name in names:
            row = run_recipe(name, RECIPES[name], args, vault, work, probes, base_scores, texts, ctx)
            done["rows"].append(row)
            done.update({"vault": str(vault), "unseen_questions": len(probes), "chunks": {"usable": len(usable),
                         "unseen": len(unseen), "train": len(train_chunks)}, "max_length": args.max_length,
                         "context_chunks": args.context_chunks, "peak_rss_mb_bench": peak_rss_mb()})
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(done, indent=2))
            print(f"{name}: done in {time.perf_counter() - started:.0f} s", flush=True)
    indexer.close()
    print(table(done["rows"]))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
