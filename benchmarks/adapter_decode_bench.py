"""Decode tokens/s with a LoRA adapter active, beside the plain base, for the candidate ways to make
an adapter cheaper at serving time: fewer target modules, a lower rank, fewer threads on the LoRA
path, and the adapter merged into a served copy of the base GGUF (llm/merge.py). All variants run
interleaved in one process, rounds alternating, so machine noise hits them alike; the figure is each
variant's median over rounds, as a ratio of the base's.

    .venv/bin/python benchmarks/adapter_decode_bench.py               # bundled SmolLM2-135M (Q4_1)
    .venv/bin/python benchmarks/adapter_decode_bench.py --model 1b    # random ~1.1B llama, same family
    .venv/bin/python benchmarks/adapter_decode_bench.py --smoke       # seconds: the suite runs this

Random adapter weights: size and cost are what matter here, not what they say.
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

ATTN = ("attn_q", "attn_k", "attn_v", "attn_output")
MLP = ("ffn_gate", "ffn_up", "ffn_down")
TARGETS = {"all-linear": ATTN + MLP, "attention": ATTN, "q,v": ("attn_q", "attn_v"), "mlp": MLP}
# ~1.1B parameters: TinyLlama's shape on SmolLM2's vocabulary and tokenizer
BIG = {"block_count": 22, "embedding_length": 2048, "feed_forward_length": 5632, "attention.head_count": 32,
       "attention.head_count_kv": 4}


def random_q4_1(rows: int, cols: int, rng):
    """Q4_1 blocks with small fixed scale and random nibbles: a valid weight, made in no time."""
    import numpy as np

    blocks = rows * cols // 32
    out = np.empty((blocks, 20), dtype=np.uint8)
    out[:, 0:2] = np.frombuffer(np.float16(0.002).tobytes(), dtype=np.uint8)
    out[:, 2:4] = np.frombuffer(np.float16(-0.015).tobytes(), dtype=np.uint8)
    out[:, 4:] = rng.integers(0, 256, (blocks, 16), dtype=np.uint8)
    return out.reshape(rows, cols // 32 * 20)


def make_big_model(bundled: Path, out: Path) -> Path:
    """The bundled model's metadata and tokenizer with BIG's dimensions and random Q4_1 weights."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(bundled))
    writer = gguf.GGUFWriter(str(out), arch="llama")
    for name, f in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        key = name.removeprefix("llama.")
        if key in BIG:
            writer.add_key_value(name, BIG[key], f.types[0])
            continue
        sub = f.types[1] if f.types[0] == gguf.GGUFValueType.ARRAY and len(f.types) > 1 else None
        writer.add_key_value(name, f.contents(), f.types[0], sub_type=sub)
    d, ff, n_head, n_kv = (BIG[k] for k in ("embedding_length", "feed_forward_length", "attention.head_count",
                                             "attention.head_count_kv"))
    kv = d // n_head * n_kv
    rng = np.random.default_rng(0)
    q41 = gguf.GGMLQuantizationType.Q4_1
    writer.add_tensor("token_embd.weight", random_q4_1(49152, d, rng), raw_dtype=q41)
    writer.add_tensor("output_norm.weight", np.ones(d, dtype=np.float32))
    shapes = {"attn_q": (d, d), "attn_k": (kv, d), "attn_v": (kv, d), "attn_output": (d, d),
              "ffn_gate": (ff, d), "ffn_up": (ff, d), "ffn_down": (d, ff)}
    for i in range(BIG["block_count"]):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(d, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(d, dtype=np.float32))
        for name, (rows, cols) in shapes.items():
            writer.add_tensor(f"blk.{i}.{name}.weight", random_q4_1(rows, cols, rng), raw_dtype=q41)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def make_lora(base: Path, out: Path, targets: tuple[str, ...], rank: int, seed: int = 1) -> Path:
    """A GGUF LoRA (f16, alpha 2r as train.lora_alpha's default) on `targets` of every block."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(base))
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(out), arch="llama")
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", 2.0 * rank)
    for t in reader.tensors:
        parts = t.name.split(".")
        if len(parts) == 4 and parts[0] == "blk" and parts[2] in targets:
            n_out, n_in = int(t.shape[1]), int(t.shape[0])
            writer.add_tensor(t.name + ".lora_a", (rng.standard_normal((rank, n_in)) * 0.01).astype(np.float16))
            writer.add_tensor(t.name + ".lora_b", (rng.standard_normal((n_out, rank)) * 0.01).astype(np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


TEXT = ("The starter is fed flour and water in equal weights every morning, then left on the counter "
        "until it doubles; in summer it is kept in the fridge and fed twice a week.")


def merge_quality(base: Path, adapter: Path, merged: dict[str, Path]) -> dict:
    """How far each merged copy and the plain base are from the base with the adapter applied at run
    time (what the merge should reproduce): mean per-token KL on TEXT, nats."""
    import numpy as np

    from vault_agent.train.llama_scorer import LlamaScorer

    def log_probs(gguf, lora):
        with LlamaScorer(gguf, lora, n_ctx=256) as scorer:
            return scorer.log_probs(scorer.llm.tokenize(TEXT.encode(), add_bos=True, special=False), 1)

    runtime = log_probs(base, adapter)
    kl = lambda q: float((np.exp(runtime) * (runtime - q)).sum(-1).mean())  # noqa: E731
    out = {"base": round(kl(log_probs(base, None)), 4)}
    out.update({f"merged {t}": round(kl(log_probs(p, None)), 4) for t, p in merged.items()})
    return out


def decode_rate(llm, prompt: list[int], tokens: int) -> float:
    """Greedy decode of `tokens` tokens after `prompt`: tokens per second of the decode alone."""
    import numpy as np

    llm.reset()
    llm.eval(prompt)
    t0 = time.perf_counter()
    for _ in range(tokens):
        llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
    return tokens / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("bundled", "1b"), default="bundled")
    ap.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--no-merge", action="store_true",
                    help="skip the merged copies (numpy merge of a big model is slow)")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.smoke:
        args.rounds, args.tokens = 1, 4

    from vault_agent.llm.backend import resolve_model_path
    from vault_agent.llm.lora import LoraSlot, adapter_safe_loading, import_llama_cpp, set_threads
    from vault_agent.llm.merge import merge_lora

    llama_cpp = import_llama_cpp()
    bundled = resolve_model_path("bundled")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = make_big_model(bundled, tmp / "big.gguf") if args.model == "1b" else bundled
        # (name, targets, rank, threads)
        adapters = [("all-linear r16", "all-linear", 16, args.threads)]
        if not args.smoke:
            adapters += [("all-linear r8", "all-linear", 8, args.threads),
                         ("attention r16", "attention", 16, args.threads), ("q,v r16", "q,v", 16, args.threads)]
            if args.threads > 1:
                adapters.append(("all-linear r16, 1 thread", "all-linear", 16, 1))
        files = {}
        for name, targets, rank, _ in adapters:
            key = (targets, rank)
            if key not in files:
                files[key] = make_lora(base, tmp / f"{targets}-{rank}.gguf", TARGETS[targets], rank)
        merged, merge_seconds = {}, {}
        for weight_type in () if args.no_merge else ("q4_1", "q8_0", "f16"):
            t0 = time.perf_counter()
            merged[weight_type] = Path(merge_lora(base, files[("all-linear", 16)], tmp / f"merged-{weight_type}.gguf",
                                                  weight_type=weight_type)["path"])
            merge_seconds[weight_type] = round(time.perf_counter() - t0, 1)
        quality = merge_quality(base, files[("all-linear", 16)], merged)

        def load(path: Path):
            with adapter_safe_loading():
                return llama_cpp.Llama(model_path=str(path), n_ctx=512, n_threads=args.threads, verbose=False)

        llm = load(base)
        merged_llms = {f"merged all-linear r16 {t}": load(path) for t, path in merged.items()}
        slot = LoraSlot(llm)
        handles = {key: slot.load(path) for key, path in files.items()}
        prompt = llm.tokenize(b"Write three sentences about looking after a sourdough starter.", add_bos=True)
        rates: dict[str, list[float]] = {"base": [], "base, 1 thread": [], **{k: [] for k in merged_llms}}
        rates.update({name: [] for name, *_ in adapters})
        for _ in range(args.rounds):
            slot.use(None)
            set_threads(llm, args.threads)
            rates["base"].append(decode_rate(llm, prompt, args.tokens))
            if args.threads > 1 and not args.smoke:
                set_threads(llm, 1)
                rates["base, 1 thread"].append(decode_rate(llm, prompt, args.tokens))
            for name, targets, rank, threads in adapters:
                slot.use(handles[(targets, rank)])
                set_threads(llm, threads)
                rates[name].append(decode_rate(llm, prompt, args.tokens))
            for name, m in merged_llms.items():
                rates[name].append(decode_rate(m, prompt, args.tokens))
            print("round:", {k: round(v[-1], 1) for k, v in rates.items() if v}, flush=True)
        slot.close()
        llm.close()
        for m in merged_llms.values():
            m.close()
        sizes = {f"{t} r{r}": round(p.stat().st_size / 2**20, 2) for (t, r), p in files.items()}
        base_mb = round(base.stat().st_size / 2**20, 1)
        merged_mb = {t: round(p.stat().st_size / 2**20, 1) for t, p in merged.items()}
    median = {k: statistics.median(v) for k, v in rates.items() if v}
    result = {
        "model": args.model, "base_gguf_mb": base_mb, "threads": args.threads, "rounds": args.rounds,
        "decode_tokens": args.tokens,
        "tokens_per_s": {k: round(v, 1) for k, v in median.items()},
        "over_base": {k: round(v / median["base"], 3) for k, v in median.items()},
        "adapter_gguf_mb": sizes,
        "merge": {"seconds": merge_seconds, "merged_gguf_mb": merged_mb,
                  "kl_runtime_adapter_to": quality,
                  "note": "mean per-token KL(base+runtime adapter || x) on a text; 'base' = the adapter's whole move"},
        "peak_rss_mb": peak_rss_mb(), "smoke": args.smoke, "target_over_base_min": 0.85,
    }
    write_result(f"adapter_decode_bench_{args.model}" + ("_smoke" if args.smoke else ""), result, args.out)


if __name__ == "__main__":
    main()
