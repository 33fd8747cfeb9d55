"""The eval gate's time for 200 held-out pairs on the bundled model, with each adapter scored as
llm.adapter_serving serves it: `runtime` (the LoRA applied by llama.cpp, in the base's context; the
baseline) and `auto` (the default: on the bundled model, the adapter's merged Q8_0 copy in a context
of its own, train/gate.py gate_passes), in one run, and how far apart the two put the figures the
gate decides on (per-pair margins, accuracy, KL to the base).

Each pair's prompt is in the product's RAG format (system rules, numbered notes, question; about 350
tokens) with notes of its own, as held-out pairs from different questions have: what one pass can
take from the one before is the shared start (system turn, notes preamble; train/llama_scorer.py).
Rank-16 all-linear adapters.
"First gate": one adapter against the base, nothing cached (two passes per pair).
"Nightly": the next gate over the same held-out pairs, a second adapter against the first, the
first's figures kept from the gate before (train/score_cache.py), so the candidate is scored, plus
a base pass on gate.KL_PAIRS pairs for its KL.
"Before" (--before-pairs, 0 skips it): the per-pair scoring as it was before logits were asked for
the answer positions only (logits_all), on a few pairs, with its margins against today's runtime path.

    .venv/bin/python benchmarks/gate_bench.py                   # 200 pairs per gate, 30 before
    .venv/bin/python benchmarks/gate_bench.py --before-pairs 0  # the two serving modes only
    .venv/bin/python benchmarks/gate_bench.py --smoke           # seconds: the suite runs this
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

SERVING = ("runtime", "auto")  # llm.adapter_serving: the runtime LoRA (the baseline), and the default
FOODS = ["flour", "water", "rye", "salt", "honey", "oats", "barley", "milk", "butter", "yeast"]


def held_out_pairs(n: int, notes: int = 4) -> list[dict]:
    """Held-out pairs in the product's RAG prompt format (llm/prompts.py, as synthetic pairs are made):
    the system rules, then `notes` numbered notes of two facts each (about 350 tokens in all, the answers about 10) and
    the question; each pair's notes are its own."""
    from vault_agent.llm.prompts import build_rag_messages

    rows = []
    for i in range(n):
        contexts = [{"n": k + 1, "note": f"Starters/Jar {i * 7 + k}.md", "heading": "Feeding",
                     "text": " ".join(f"Note {i}-{k}-{j}: the starter is fed {FOODS[(i + k + j) % 10]} and "
                                      f"{FOODS[(i * 3 + k + j) % 10]} every {k + j + 2} hours in jar {i * 7 + k}."
                                      for j in range(2))} for k in range(notes)]
        rows.append({"prompt": build_rag_messages(f"Question {i}: what is the starter fed?", contexts),
                     "chosen": f"It is fed {FOODS[i % 10]} and {FOODS[(i * 3) % 10]} [1].",
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


def gates(gguf: Path, rows: list[dict], first: Path, second: Path, cache: Path, serving: str) -> dict:
    """The first gate (`first` against the base, nothing cached) and the nightly one (`second`
    against `first`, over the same pairs), as the gate runs with llm.adapter_serving = `serving`:
    seconds, figures, and what the nightly gate reused. Merged copies are built inside the timing,
    as the gate builds them."""
    from vault_agent.train.gate import score_all

    t0 = time.perf_counter()
    after, _ = score_all(gguf, [("bench", first), (None, None)], rows, [], n_ctx=1024, cache_dir=cache,
                         serving=serving)
    first_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    nightly, incumbent = score_all(gguf, [("next", second), ("bench", first)], rows, [], n_ctx=1024,
                                   cache_dir=cache, serving=serving)
    nightly_s = time.perf_counter() - t0
    return {"first": after, "nightly": nightly, "incumbent": incumbent,
            "seconds": {"first_gate": first_s, "nightly": nightly_s}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--before-pairs", type=int, default=30, help="pairs for the logits_all scoring (0: skip it)")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.smoke:
        args.pairs, args.before_pairs = 3, 2

    from vault_agent.llm.backend import resolve_model_path
    from vault_agent.train.gate import KL_PAIRS, score

    gguf = resolve_model_path("bundled")
    rows = held_out_pairs(max(args.pairs, args.before_pairs))
    modes = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["VAULT_AGENT_HOME"] = str(tmp / "home")  # the model's Q8_0 copy is built (and timed) here
        for serving in SERVING:
            (tmp / serving).mkdir()
            first = make_lora(gguf, tmp / serving / "a.gguf", TARGETS["all-linear"], 16)
            second = make_lora(gguf, tmp / serving / "b.gguf", TARGETS["all-linear"], 16, seed=2)
            modes[serving] = gates(gguf, rows[:args.pairs], first, second, tmp / serving / "gate-scores", serving)
        before = None
        if args.before_pairs:
            adapter = tmp / "runtime" / "a.gguf"
            t0 = time.perf_counter()
            before_margins, before_kl = score_before(gguf, adapter, rows[:args.before_pairs], 1024)
            before = {"seconds": time.perf_counter() - t0, "margins": before_margins, "kl": before_kl,
                      "same": score(gguf, adapter, rows[:args.before_pairs], [], n_ctx=1024, label="bench")}
    per_pair = {f"{serving} {gate_}": round(m["seconds"][gate_] / args.pairs, 3)
                for serving, m in modes.items() for gate_ in ("first_gate", "nightly")}
    runtime, auto = modes["runtime"], modes["auto"]
    result = {
        "pairs": {"gated": args.pairs, "scored_first_gate": auto["first"].pairs, "before": args.before_pairs,
                  "nightly_reused_for_incumbent": {k: m["incumbent"].reused for k, m in modes.items()},
                  "kl_sample_pairs": KL_PAIRS},
        "served_as": {k: m["first"].served_as for k, m in modes.items()},
        "seconds_per_pair": per_pair,
        "seconds_for_200_pairs": {k: round(200 * v, 1) for k, v in per_pair.items()},
        "auto_over_runtime": {g: round(auto["seconds"][g] / runtime["seconds"][g], 3)
                              for g in ("first_gate", "nightly")},
        "nightly_margins_equal_incumbents_own_gate": {k: m["incumbent"].margins == m["first"].margins
                                                      for k, m in modes.items()},
        # what scoring the merged copy instead of the runtime LoRA changes in the figures the gate decides on
        "merged_vs_runtime": {
            "max_margin_difference_nats": max(abs(a - b) for a, b in zip(auto["first"].margins, runtime["first"].margins)),
            "accuracy": [auto["first"].accuracy, runtime["first"].accuracy],
            "kl_to_base": [auto["first"].kl_to_base, runtime["first"].kl_to_base]},
        "threads": os.cpu_count(), "peak_rss_mb": peak_rss_mb(), "smoke": args.smoke,
        "targets": {"seconds_for_200_pairs_max": 300},
    }
    if before is not None:
        result["logits_all_before"] = {
            "seconds_per_pair": round(before["seconds"] / args.before_pairs, 3),
            "max_margin_difference_nats": max(abs(a - b) for a, b in zip(before["same"].margins, before["margins"])),
            "margin_difference_max_nats": 1e-3,  # the target: the same figures, logits asked for fewer positions
            "kl_to_base": {"before": before["kl"], "after": before["same"].kl_to_base}}
    write_result("gate_bench_smoke" if args.smoke else "gate_bench", result, args.out)


if __name__ == "__main__":
    main()
