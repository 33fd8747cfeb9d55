"""The bundled model served from its own Q8_0 copy (llm/merged_copy.py ensure_base_copy, the default
`llm.adapter_serving = "auto"` on small CPU models) against the Q4_1 file itself (the baseline), in
one run, interleaved round by round: prompt evaluation (what a question's first token waits for,
notes included), decode, and how far apart the two models' next-token distributions are.

    .venv/bin/python benchmarks/served_copy_bench.py [--rounds 5] [--prompt-tokens 300 700] [--threads 2]
    .venv/bin/python benchmarks/served_copy_bench.py --smoke
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_mb, write_result  # noqa: E402
from adapter_decode_bench import decode_rate  # noqa: E402

SAMPLE_VAULT = Path(__file__).resolve().parent.parent / "sample_vault"


def vault_text() -> str:
    """The sample vault's notes, one after another: prompt text like the notes a question brings."""
    return "\n\n".join(p.read_text(encoding="utf-8") for p in sorted(SAMPLE_VAULT.rglob("*.md")))


def prompt_rate(llm, ids: list[int]) -> float:
    """Tokens per second evaluating `ids` from an empty cache (llama.cpp's own batching)."""
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(ids)
    return len(ids) / (time.perf_counter() - t0)


def mean_kl(p, q) -> float:
    import numpy as np

    return float((np.exp(p) * (p - q)).sum(-1).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--prompt-tokens", type=int, nargs="+", default=[300, 700])
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    ap.add_argument("--smoke", action="store_true", help="one short round: checks the script works")
    args = ap.parse_args()
    if args.smoke:
        args.rounds, args.prompt_tokens, args.decode_tokens = 1, [64], 8

    from vault_agent.llm.backend import resolve_model_path
    from vault_agent.llm.lora import adapter_safe_loading, import_llama_cpp
    from vault_agent.llm.merged_copy import ensure_base_copy
    from vault_agent.train.llama_scorer import LlamaScorer

    model = resolve_model_path("bundled")
    llama_cpp = import_llama_cpp()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        copy = ensure_base_copy(model, Path(tmp))
        build_s = time.perf_counter() - t0
        files = {"file": model, "q8_0 copy": copy}
        with LlamaScorer(model, None, n_ctx=1024) as scorer:
            text_ids = scorer.llm.tokenize(vault_text().encode(), add_bos=True, special=False)
            kl_ids = text_ids[:512]
            file_lp = scorer.log_probs(kl_ids, 1)
        with LlamaScorer(copy, None, n_ctx=1024) as scorer:
            kl_copy_to_file = mean_kl(scorer.log_probs(kl_ids, 1), file_lp)

        def load(path: Path):
            with adapter_safe_loading():
                return llama_cpp.Llama(model_path=str(path), n_ctx=1024, n_threads=args.threads,
                                       n_threads_batch=args.threads, verbose=False)

        llms = {name: load(path) for name, path in files.items()}
        prompt_rates = {name: {n: [] for n in args.prompt_tokens} for name in files}
        decode_rates: dict[str, list[float]] = {name: [] for name in files}
        short = text_ids[:32]
        for r in range(args.rounds):
            for name, llm in llms.items():
                for n in args.prompt_tokens:
                    prompt_rates[name][n].append(prompt_rate(llm, text_ids[:n]))
                decode_rates[name].append(decode_rate(llm, short, args.decode_tokens))
            print(f"round {r + 1}:", {name: [round(v[n][-1]) for n in args.prompt_tokens] + [round(decode_rates[name][-1], 1)]
                                      for name, v in prompt_rates.items()}, flush=True)
        for llm in llms.values():
            llm.close()
        sizes = {name: round(path.stat().st_size / 2**20, 1) for name, path in files.items()}
    median = lambda xs: statistics.median(xs)  # noqa: E731
    prompt = {name: {str(n): round(median(v), 1) for n, v in rows.items()} for name, rows in prompt_rates.items()}
    decode = {name: round(median(v), 1) for name, v in decode_rates.items()}
    result = {
        "threads": args.threads, "rounds": args.rounds, "decode_tokens": args.decode_tokens,
        "prompt_tokens_per_s": prompt,
        "decode_tokens_per_s": decode,
        "copy_over_file": {
            "prompt": {str(n): round(median(prompt_rates["q8_0 copy"][n]) / median(prompt_rates["file"][n]), 3)
                       for n in args.prompt_tokens},
            "decode": round(decode["q8_0 copy"] / decode["file"], 3)},
        "kl_copy_to_file_nats_per_token": round(kl_copy_to_file, 5),
        "copy_build_s": round(build_s, 1), "gguf_mb": sizes,
        "peak_rss_mb": peak_rss_mb(), "smoke": args.smoke,
    }
    write_result("served_copy_bench_smoke" if args.smoke else "served_copy_bench", result, args.out)


if __name__ == "__main__":
    main()
