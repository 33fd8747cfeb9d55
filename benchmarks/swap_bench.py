"""Adapter hot-swap on the bundled model: swap latency (load + activate) idle and under load, failed
generations while swapping (target 0), decode tokens/s with an adapter beside none (same run; target
under 15% slower), and the eval gate's time for N held-out pairs. Swaps and decode are measured with
the default `llm.adapter_serving` (on the bundled model: a merged copy) and with the runtime LoRA.

    .venv/bin/python benchmarks/swap_bench.py            # full run (200 gate pairs)
    .venv/bin/python benchmarks/swap_bench.py --smoke    # seconds: the suite runs this
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _common import peak_rss_mb, summary_ms, write_result  # noqa: E402

QUESTION = [{"role": "user", "content": "Write three sentences about looking after a sourdough starter."}]


def make_adapters(workdir: Path, gguf: Path, rank: int) -> list[Path]:
    """Two rank-`rank` adapters on every linear layer (random weights: size and cost are what matter)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from vault_agent.train.export import export_gguf_lora

    base = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    out = []
    for seed in (1, 2):
        model = get_peft_model(base, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear"))
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_" in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.01)
        model.save_pretrained(str(workdir / f"a{seed}"))
        base = model.unload()
        export_gguf_lora(workdir / f"a{seed}", gguf, workdir / f"a{seed}.gguf")
        out.append(workdir / f"a{seed}.gguf")
    return out


def decode_rate(backend, adapter: Path | None, version: str | None, runs: int, max_tokens: int) -> float:
    backend.set_adapter(adapter, version)
    tokens, seconds = 0, 0.0
    for i in range(runs):
        t0 = time.perf_counter()
        text = backend.chat(QUESTION, max_tokens=max_tokens, temperature=0.0, seed=i)
        seconds += time.perf_counter() - t0
        tokens += backend.count_tokens(text)
    return tokens / seconds


def swaps_under_load(backend, adapters: list[Path], swaps: int, max_tokens: int) -> dict:
    stop, done, failed = threading.Event(), [0], []

    def client():
        while not stop.is_set():
            try:
                backend.chat(QUESTION, max_tokens=max_tokens)
                done[0] += 1
            except Exception as e:  # noqa: BLE001 - counted, that is the figure
                failed.append(repr(e))

    t = threading.Thread(target=client)
    t.start()
    waits = []
    for i in range(swaps):
        t0 = time.perf_counter()
        backend.set_adapter(adapters[i % 2], f"v{i % 2 + 1}")
        waits.append(time.perf_counter() - t0)
    stop.set()
    t.join()
    backend.set_adapter(None, None)
    return {"swaps": swaps, "generations": done[0], "failed": len(failed), "errors": failed[:3],
            "swap_incl_wait_for_generation": summary_ms(waits)}


def gate_time(gguf: Path, adapter: Path, pairs: int) -> dict:
    from vault_agent.train.gate import score

    context = " ".join(f"Note {i}: the starter is fed flour and water every morning." for i in range(25 if pairs > 2 else 3))
    rows = [{"prompt": [{"role": "user", "content": f"{context}\nQuestion {i}: how often is it fed?"}],
             "chosen": "Every morning, with flour and water in equal weights.",
             "rejected": "I do not know anything about sourdough starters."} for i in range(pairs)]
    t0 = time.perf_counter()
    s = score(gguf, adapter, rows, [context], n_ctx=1024, label="bench")
    seconds = time.perf_counter() - t0
    return {"pairs": pairs, "seconds": round(seconds, 1), "seconds_per_pair": round(seconds / pairs, 3),
            "prompt_tokens_approx": 300, "scored": s.pairs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    ap.add_argument("--swaps", type=int, default=40)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--gate-pairs", type=int, default=200)
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.smoke:
        args.swaps, args.gate_pairs, args.rank = 4, 2, 4
    decode_runs, max_tokens = (1, 16) if args.smoke else (6, 128)

    from vault_agent.config import LLMSettings
    from vault_agent.llm.backend import LlamaBackend, resolve_model_path

    gguf = resolve_model_path("bundled")
    with tempfile.TemporaryDirectory() as tmp:
        adapters = make_adapters(Path(tmp), gguf, args.rank)
        size_mb = round(adapters[0].stat().st_size / 2**20, 2)
        modes = {}
        for mode in ("auto", "runtime"):  # the default (a merged copy on the bundled model), then the LoRA path
            with LlamaBackend(LLMSettings(max_tokens=max_tokens, n_ctx=1024, adapter_serving=mode)) as backend:
                backend.set_adapter(adapters[0], "v1")  # the first activation builds a merged copy: not timed
                backend.set_adapter(adapters[1], "v2")
                served_as = backend.adapter_served_as
                idle = [backend.set_adapter(adapters[i % 2], f"v{i % 2 + 1}") / 1000 for i in range(args.swaps)]
                off = [backend.set_adapter(None, None) / 1000 for _ in range(max(2, args.swaps // 4))]
                base_rate = decode_rate(backend, None, None, decode_runs, max_tokens)
                adapted_rate = decode_rate(backend, adapters[0], "v1", decode_runs, max_tokens)
                backend.set_adapter(None, None)
                load = swaps_under_load(backend, adapters, args.swaps, 32)
            modes[mode] = {
                "served_as": served_as, "swap_idle": summary_ms(idle), "switch_off": summary_ms(off),
                "under_load": load,
                "decode_tokens_per_s": {"no_adapter": round(base_rate, 1), "adapter": round(adapted_rate, 1),
                                        "adapter_over_none": round(adapted_rate / base_rate, 3)}}
        gate = gate_time(gguf, adapters[0], args.gate_pairs)
    result = {
        "adapter": {"rank": args.rank, "targets": "all-linear", "gguf_mb": size_mb},
        **modes["auto"],  # what users get
        "llm.adapter_serving": modes,
        "gate": gate, "peak_rss_mb": peak_rss_mb(), "smoke": args.smoke,
        "targets": {"swap_p95_ms": 100, "failed": 0, "adapter_slowdown_max": 0.15},
    }
    write_result("swap_bench_smoke" if args.smoke else "swap_bench", result, args.out)


if __name__ == "__main__":
    main()
