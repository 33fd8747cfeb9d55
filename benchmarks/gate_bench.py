"""The eval gate's time per held-out pair on the bundled model, before and after logits were asked
only for the answer positions (train/gate.py through llm/lora.py's BatchDecoder), in one run, and
how far apart the two give the figures the gate decides on (per-pair margins, KL to the base).

"Before" is the per-pair scoring as it was: a Llama built with logits_all, every position's logits
computed and copied out, on fewer pairs (it is the slow one). Each pair has its own notes in the
prompt (about 300 tokens), as held-out pairs from different questions do, so no pair reuses another's
prompt cache. One rank-16 all-linear adapter, scored against the base (two passes per pair).

"Nightly" is the next gate over the same held-out pairs: a second adapter against the first, the
first's figures (and the base's) kept from the gate before (train/score_cache.py), so the
candidate is scored, plus a base pass on gate.KL_PAIRS pairs for its KL. Without the cache that gate
would make three passes per pair (base, candidate, incumbent).

    .venv/bin/python benchmarks/gate_bench.py              # 200 pairs after, 30 before
    .venv/bin/python benchmarks/gate_bench.py --smoke      # seconds: the suite runs this
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _common import peak_rss_mb, write_result  # noqa: E402
from adapter_decode_bench import TARGETS, make_lora  # noqa: E402

FOODS = ["flour", "water", "rye", "salt", "honey", "oats", "barley", "milk", "butter", "yeast"]


def held_out_pairs(n: int, notes: int = 12) -> list[dict]:
    rows = []
    for i in range(n):
        context = " ".join(f"Note {i}-{k}: the starter is fed {FOODS[(i + k) % 10]} and {FOODS[(i * 3 + k) % 10]} "
                           f"every {k + 2} hours in jar {i * 7 + k}." for k in range(notes))
        rows.append({"prompt": [{"role": "user", "content": f"{context}\nQuestion {i}: what is the starter fed?"}],
                     "chosen": f"It is fed {FOODS[i % 10]} and {FOODS[(i * 3) % 10]}, as note {i}-0 says.",
                     "rejected": "I do not know anything about sourdough starters."})
    return rows


def score_before(gguf: Path, adapter: Path, rows: list[dict], n_ctx: int) -> tuple[list[float], float]:
    """(margins, mean KL) the way the gate scored before: logits_all, Llama.eval per answer."""
    import numpy as np

    from vault_agent.llm.lora import LoraSlot, adapter_safe_loading, import_llama_cpp
    from vault_agent.train.gate import completion_text
    from vault_agent.train.llama_scorer import LlamaScorer

    def log_softmax(x):
        x = np.asarray(x, dtype=np.float64)
        x = x - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))

    with LlamaScorer(gguf, None, n_ctx) as tokens_only:  # the same chat format and tokens as the gate
        found_all = [[tokens_only.answer_tokens(r["prompt"], completion_text(r[s])) for s in ("chosen", "rejected")]
                     for r in rows]
    with adapter_safe_loading():
        llm = import_llama_cpp().Llama(model_path=str(gguf), n_ctx=n_ctx, logits_all=True,
                                       n_threads=os.cpu_count() or 1, verbose=False)
    slot = LoraSlot(llm)
    handle = slot.load(adapter)

    def passes(found):
        ids0, start = found[0]
        llm.reset()
        llm.eval(ids0[:start])
        out = []
        for ids, _ in found:
            llm.n_tokens = start
            llm.eval(ids[start:])
            out.append(log_softmax(llm.scores[start - 1: len(ids) - 1]))
        return out

    margins, kl, positions = [], 0.0, 0
    for found in found_all:
        slot.use(None)
        base = passes(found)
        slot.use(handle)
        lps = passes(found)
        kl += sum(float((np.exp(a) * (a - b)).sum()) for a, b in zip(lps, base))
        positions += sum(len(b) for b in base)
        means = [float(lp[np.arange(len(ids) - at), np.asarray(ids[at:])].mean()) for lp, (ids, at) in zip(lps, found)]
        margins.append(means[0] - means[1])
    slot.close()
    llm.close()
    return margins, kl / positions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--before-pairs", type=int, default=30)
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.smoke:
        args.pairs, args.before_pairs = 3, 2

    from vault_agent.llm.backend import resolve_model_path
    from vault_agent.train.gate import KL_PAIRS, score, score_all

    gguf = resolve_model_path("bundled")
    rows = held_out_pairs(max(args.pairs, args.before_pairs))
    with tempfile.TemporaryDirectory() as tmp:
        adapter = make_lora(gguf, Path(tmp) / "a.gguf", TARGETS["all-linear"], 16)
        t0 = time.perf_counter()
        before_margins, before_kl = score_before(gguf, adapter, rows[:args.before_pairs], 1024)
        before_s = time.perf_counter() - t0
        cache = Path(tmp) / "gate-scores"
        t0 = time.perf_counter()
        after, _ = score_all(gguf, [("bench", adapter), (None, None)], rows[:args.pairs], [], n_ctx=1024,
                             cache_dir=cache)
        after_s = time.perf_counter() - t0
        same = score(gguf, adapter, rows[:args.before_pairs], [], n_ctx=1024, label="bench")
        candidate = make_lora(gguf, Path(tmp) / "b.gguf", TARGETS["all-linear"], 16, seed=2)
        t0 = time.perf_counter()
        nightly, incumbent = score_all(gguf, [("next", candidate), ("bench", adapter)], rows[:args.pairs], [],
                                       n_ctx=1024, cache_dir=cache)
        nightly_s = time.perf_counter() - t0
    per_before, per_after, per_nightly = (s / n for s, n in ((before_s, args.before_pairs), (after_s, args.pairs),
                                                             (nightly_s, args.pairs)))
    result = {
        "pairs": {"before": args.before_pairs, "after": args.pairs, "scored_after": after.pairs,
                  "nightly_reused_for_incumbent": incumbent.reused, "kl_sample_pairs": KL_PAIRS},
        "seconds_per_pair": {"before": round(per_before, 3), "after": round(per_after, 3),
                             "after_over_before": round(per_after / per_before, 3),
                             "nightly": round(per_nightly, 3),
                             "nightly_over_first_gate": round(per_nightly / per_after, 3)},
        "seconds_for_200_pairs_after": round(200 * per_after, 1),
        "seconds_for_200_pairs_nightly": round(200 * per_nightly, 1),
        "nightly_margins_equal_incumbents_own_gate": incumbent.margins == after.margins,
        "max_margin_difference_nats": max(abs(a - b) for a, b in zip(same.margins, before_margins)),
        "kl_to_base": {"before": before_kl, "after": same.kl_to_base},
        "threads": os.cpu_count(), "peak_rss_mb": peak_rss_mb(), "smoke": args.smoke,
        "targets": {"seconds_for_200_pairs_max": 300, "margin_difference_max_nats": 1e-3},
    }
    write_result("gate_bench_smoke" if args.smoke else "gate_bench", result, args.out)


if __name__ == "__main__":
    main()
