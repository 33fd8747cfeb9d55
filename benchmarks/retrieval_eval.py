"""Retrieval quality on the sample vault: recall@5 and MRR (note level) for vault-agent's hybrid
retrieval beside a naive baseline measured in the same run: fixed 1,000-character windows of each
file, dense only, the same embedding model.

    .venv/bin/python benchmarks/retrieval_eval.py [--vault sample_vault] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

HERE = Path(__file__).resolve().parent
QUESTIONS = HERE / "data" / "sample_vault_questions.jsonl"


def note_ranking(paths: list[str]) -> list[str]:
    return list(dict.fromkeys(paths))


def score(rankings: dict[str, list[str]], questions: list[dict], k: int = 5) -> dict:
    recall, rr, top1 = [], [], []
    for q in questions:
        ranked = rankings[q["id"]]
        relevant = set(q["relevant"])
        recall.append(len(relevant & set(ranked[:k])) / len(relevant))
        rank = next((i for i, p in enumerate(ranked, 1) if p in relevant), None)
        rr.append(1 / rank if rank else 0.0)
        top1.append(rank == 1)
    n = len(questions)
    return {"hit@1": round(sum(top1) / n, 3), f"recall@{k}": round(sum(recall) / n, 3), "mrr": round(sum(rr) / n, 3)}


def naive_rankings(vault: Path, questions: list[dict], embedder) -> dict[str, list[str]]:
    import numpy as np

    windows, owners = [], []
    for path in sorted(vault.rglob("*.md")):
        rel = path.relative_to(vault).as_posix()
        if rel.startswith((".obsidian/", ".trash/")):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for i in range(0, max(len(text), 1), 1000):
            if text[i : i + 1000].strip():
                windows.append(text[i : i + 1000])
                owners.append(rel)
    matrix = np.array(embedder.embed(windows))
    out = {}
    for q in questions:
        sims = matrix @ np.array(embedder.embed_query(q["question"]))
        out[q["id"]] = note_ranking([owners[i] for i in np.argsort(-sims)])
    return out


def ours_rankings(indexer, questions: list[dict], **kwargs) -> dict[str, list[str]]:
    from vault_agent.index.search import search

    return {q["id"]: note_ranking([h.path for h in search(indexer, q["question"], 10, **kwargs)]) for q in questions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vault", default=str(HERE.parent / "sample_vault"))
    parser.add_argument("--questions", default=str(QUESTIONS))
    parser.add_argument("--out")
    args = parser.parse_args()
    os.environ["VAULT_AGENT_HOME"] = tempfile.mkdtemp(prefix="va-eval-")

    from vault_agent.config import load_settings
    from vault_agent.index.embedder import Embedder
    from vault_agent.index.indexer import Indexer
    from vault_agent.paths import app_dirs

    questions = [json.loads(line) for line in Path(args.questions).read_text().splitlines() if line.strip()]
    vault = Path(args.vault).resolve()
    settings = load_settings(vault=vault)
    embedder = Embedder(settings.index)
    indexer = Indexer(settings, vault, app_dirs().ensure(), embedder=embedder)
    indexer.reconcile()
    results = {
        "questions": len(questions),
        "naive_1000char_dense": score(naive_rankings(vault, questions, embedder), questions),
        "ours_dense_only": score(ours_rankings(indexer, questions, hybrid=False, per_note=1), questions),
        "ours_hybrid": score(ours_rankings(indexer, questions), questions),
    }
    ours = results["ours_hybrid"]
    misses = [q["id"] for q in questions if not set(q["relevant"]) & set(ours_rankings(indexer, [q])[q["id"]][:5])]
    results["ours_hybrid_misses_at_5"] = misses
    base = results["naive_1000char_dense"]
    results["mrr_ratio_vs_naive"] = round(ours["mrr"] / base["mrr"], 3) if base["mrr"] else None
    indexer.close()
    write_result("retrieval_eval", results, args.out)


if __name__ == "__main__":
    main()
