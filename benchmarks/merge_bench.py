"""What a merged copy keeps of a *trained* adapter, and how fast it decodes (issue 22).

adapter_decode_bench.py merges a weak random adapter, whose move is within the noise of the
quantised matmuls. Here a real adapter is trained first: `retrain` (DPO, the product's default LoRA
settings) on synthetic pairs whose chosen answer copies the fact from the numbered note and cites
it, and whose rejected answer ignores the note. Then, on pairs of the same kind it never saw:
- the held-out margin (mean chosen - rejected log-prob per token, gate.py) and accuracy of the base,
  the adapter applied at run time (what the daemon serves), and merged copies re-quantised to
  Q4_1 (the bundled model's own type), Q5_1, Q5_0 and Q8_0: the share of the adapter's margin gain
  each copy keeps;
- decode tokens/s of each, interleaved in rounds in one process, against the base.

    .venv/bin/python benchmarks/merge_bench.py [--pairs 64] [--heldout 40] [--rounds 5] [--threads 2]
    .venv/bin/python benchmarks/merge_bench.py --smoke
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _common import peak_rss_mb, write_result  # noqa: E402
from adapter_decode_bench import decode_rate  # noqa: E402

FOODS = ["flour", "water", "rye", "salt", "honey", "oats", "barley", "milk", "butter", "yeast", "spelt", "malt"]
WEIGHT_TYPES = ("q4_1", "q5_1", "q5_0", "q8_0")


def fact_pair(i: int) -> tuple[list[dict], str, str]:
    """RAG messages as served (llm/prompts.py), the grounded answer citing note [1], a generic one."""
    from vault_agent.llm.prompts import build_rag_messages

    a, b, hours = FOODS[i % 12], FOODS[(i * 5 + 3) % 12], 2 + i % 9
    contexts = [{"n": 1, "note": f"Jars/Jar {i}.md", "heading": f"Jar {i}",
                 "text": f"The starter in jar {i} is fed {a} and {b} every {hours} hours."},
                {"n": 2, "note": f"Kitchen/Shelf {i % 7}.md", "heading": "Shelf",
                 "text": f"Shelf {i % 7} holds the jars numbered {i - i % 10} to {i - i % 10 + 9}."}]
    messages = build_rag_messages(f"What is the starter in jar {i} fed, and how often?", contexts)
    chosen = f"The starter in jar {i} is fed {a} and {b} every {hours} hours [1]."
    rejected = "Sourdough starters are usually fed flour and water once or twice a day."
    return messages, chosen, rejected


def train_adapter(home: Path, vault: Path, n_pairs: int, smoke: bool) -> tuple[Path, dict]:
    os.environ["VAULT_AGENT_HOME"] = str(home)
    knobs = {"METHOD": "dpo", "MIN_PAIRS": "4", "MAX_LENGTH": "320", "HELDOUT_FRACTION": "0.1",
             "PROMOTE": "false", **({"EPOCHS": "1", "BATCH_SIZE": "2"} if smoke else {})}
    for key, value in knobs.items():
        os.environ[f"VAULT_AGENT_TRAIN__{key}"] = value
    from vault_agent.config import load_settings
    from vault_agent.feedback.store import PreferenceLog
    from vault_agent.paths import app_dirs
    from vault_agent.llm.backend import resolve_model_path
    from vault_agent.train.export import export_gguf_lora
    from vault_agent.train.retrain import retrain

    dirs = app_dirs().ensure()
    with PreferenceLog(dirs.preference_db) as log:
        for i in range(n_pairs):
            log.add_synthetic_pair(*fact_pair(i), origin_id=f"jar-{i}")
    t0 = time.perf_counter()
    result = retrain(load_settings(vault=vault), dirs)
    info = {"train_seconds": round(time.perf_counter() - t0, 1), "steps": result.steps, "version": result.version,
            "plan": result.plan}
    vdir = dirs.data / "adapters" / result.version
    export_gguf_lora(vdir / "adapter", resolve_model_path("bundled"), vdir / "adapter.gguf")
    return vdir / "adapter.gguf", info


def heldout(first: int, n: int) -> list[dict]:
    rows = []
    for i in range(first, first + n):
        messages, chosen, rejected = fact_pair(i)
        rows.append({"prompt": messages, "chosen": [{"role": "assistant", "content": chosen}],
                     "rejected": [{"role": "assistant", "content": rejected}]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=64, help="training pairs")
    ap.add_argument("--heldout", type=int, default=40, help="unseen pairs scored")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.smoke:
        args.pairs, args.heldout, args.rounds, args.tokens = 8, 4, 1, 4

    from vault_agent.llm.backend import resolve_model_path
    from vault_agent.llm.lora import LoraSlot, adapter_safe_loading, import_llama_cpp, set_threads
    from vault_agent.llm.merge import merge_lora
    from vault_agent.train.gate import score_all

    base = resolve_model_path("bundled")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        vault = tmp / "vault"
        vault.mkdir()
        adapter, training = train_adapter(tmp / "home", vault, args.pairs, args.smoke)
        merged, merge_s = {}, {}
        for wt in WEIGHT_TYPES:
            t0 = time.perf_counter()
            merged[wt] = Path(merge_lora(base, adapter, tmp / f"merged-{wt}.gguf", weight_type=wt)["path"])
            merge_s[wt] = round(time.perf_counter() - t0, 1)

        pairs = heldout(10_000, args.heldout)  # numbers far from the training pairs'
        base_s, runtime = score_all(base, [(None, None), ("runtime", adapter)], pairs, [])
        copies = {wt: score_all(path, [(wt, None)], pairs, [])[0] for wt, path in merged.items()}
        gain = runtime.margin - base_s.margin
        quality = {"base": {"margin": round(base_s.margin, 4), "accuracy": base_s.accuracy},
                   "runtime adapter": {"margin": round(runtime.margin, 4), "accuracy": runtime.accuracy,
                                       "kl_to_base": runtime.kl_to_base}}
        for wt, s in copies.items():
            quality[f"merged {wt}"] = {"margin": round(s.margin, 4), "accuracy": s.accuracy,
                                       "share_of_gain_kept": round((s.margin - base_s.margin) / gain, 3) if gain else None}
        print("quality:", quality, flush=True)

        llama_cpp = import_llama_cpp()

        def load(path: Path):
            with adapter_safe_loading():
                return llama_cpp.Llama(model_path=str(path), n_ctx=512, n_threads=args.threads, verbose=False)

        llm = load(base)
        slot = LoraSlot(llm)
        handle = slot.load(adapter)
        copies_llm = {f"merged {wt}": load(path) for wt, path in merged.items()}
        prompt = llm.tokenize(b"Write three sentences about looking after a sourdough starter.", add_bos=True)
        rates: dict[str, list[float]] = {"base": [], "runtime adapter": [], **{k: [] for k in copies_llm}}
        for _ in range(args.rounds):
            set_threads(llm, args.threads)
            slot.use(None)
            rates["base"].append(decode_rate(llm, prompt, args.tokens))
            slot.use(handle)
            rates["runtime adapter"].append(decode_rate(llm, prompt, args.tokens))
            for name, m in copies_llm.items():
                rates[name].append(decode_rate(m, prompt, args.tokens))
            print("round:", {k: round(v[-1], 1) for k, v in rates.items()}, flush=True)
        slot.close()
        llm.close()
        for m in copies_llm.values():
            m.close()
        sizes = {wt: round(p.stat().st_size / 2**20, 1) for wt, p in merged.items()}
    median = {k: statistics.median(v) for k, v in rates.items()}
    result = {
        "threads": args.threads, "rounds": args.rounds, "decode_tokens": args.tokens,
        "training": training, "heldout_pairs": args.heldout, "quality": quality,
        "tokens_per_s": {k: round(v, 1) for k, v in median.items()},
        "over_base": {k: round(v / median["base"], 3) for k, v in median.items()},
        "merge": {"seconds": merge_s, "merged_gguf_mb": sizes, "base_gguf_mb": round(base.stat().st_size / 2**20, 1)},
        "peak_rss_mb": peak_rss_mb(), "smoke": args.smoke,
    }
    write_result("merge_bench" + ("_smoke" if args.smoke else ""), result, args.out)


if __name__ == "__main__":
    main()
