"""Peak memory of materialising a served GGUF as the training base (train/base.py), new path against
the old one, on random qwen2-shaped models: Qwen2.5-0.5B's and Qwen2.5-1.5B's shapes with the bundled
model's 49k-token vocabulary (so about 0.4B and 1.4B parameters), written as f16 GGUFs.

  old: transformers' from_pretrained(gguf_file=...) in fp32, then from_config + load_state_dict and
       save_pretrained (what base.py did before: two fp32 copies)
  new: gguf_to_hf.write_bf16_checkpoint (one tensor at a time into bf16 shards)

Each run is its own process; its peak RSS is compared with the model's bf16 size (target: at most
1.5 x bf16 size + 1 GiB).

    python benchmarks/materialise_bench.py                     # 0.5B old + new, 1.5B new
    python benchmarks/materialise_bench.py --sizes 0.5b --old-for 0.5b
    python benchmarks/materialise_bench.py --smoke             # a tiny model, seconds
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _common import write_result  # noqa: E402

GIB = 1024**3
SHAPES = {  # hidden, layers, heads, kv heads, intermediate
    "smoke": (64, 2, 4, 2, 128),
    "0.5b": (896, 24, 14, 2, 4864),
    "1.5b": (1536, 28, 12, 2, 8960),
}
NEW = ("from vault_agent.train.gguf_to_hf import write_bf16_checkpoint\n"
       "write_bf16_checkpoint(GGUF, OUT)\n")
# base.py's load_trainable_from_gguf + materialise before this change, for the baseline
OLD = ("import torch\n"
       "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
       "loaded = AutoModelForCausalLM.from_pretrained(str(GGUF.parent), gguf_file=GGUF.name, dtype=torch.float32)\n"
       "tokenizer = AutoTokenizer.from_pretrained(str(GGUF.parent), gguf_file=GGUF.name)\n"
       "config = loaded.config\n"
       "del config.quantization_config\n"
       "model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)\n"
       "model.load_state_dict(loaded.state_dict())\n"
       "model.tie_weights()\n"
       "del loaded\n"
       "model.save_pretrained(OUT, safe_serialization=True)\n"
       "tokenizer.save_pretrained(OUT)\n")


def write_random_qwen2(path: Path, shape: tuple[int, ...], bundled: Path) -> int:
    """A random qwen2 GGUF (f16), streamed tensor by tensor; the bundled model's tokenizer. Returns
    the parameter count."""
    import gguf
    import numpy as np

    hidden, layers, heads, kv, inter = shape
    source = gguf.GGUFReader(str(bundled))
    vocab = len(source.fields["tokenizer.ggml.tokens"].data)
    head = hidden // heads
    tensors = [("token_embd.weight", (vocab, hidden)), ("output_norm.weight", (hidden,))]
    for i in range(layers):
        tensors += [(f"blk.{i}.attn_norm.weight", (hidden,)), (f"blk.{i}.ffn_norm.weight", (hidden,)),
                    (f"blk.{i}.attn_q.weight", (heads * head, hidden)), (f"blk.{i}.attn_q.bias", (heads * head,)),
                    (f"blk.{i}.attn_k.weight", (kv * head, hidden)), (f"blk.{i}.attn_k.bias", (kv * head,)),
                    (f"blk.{i}.attn_v.weight", (kv * head, hidden)), (f"blk.{i}.attn_v.bias", (kv * head,)),
                    (f"blk.{i}.attn_output.weight", (hidden, heads * head)),
                    (f"blk.{i}.ffn_gate.weight", (inter, hidden)), (f"blk.{i}.ffn_up.weight", (inter, hidden)),
                    (f"blk.{i}.ffn_down.weight", (hidden, inter))]
    writer = gguf.GGUFWriter(str(path), arch="qwen2")
    writer.add_name("random qwen2")
    writer.add_context_length(4096)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(inter)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv)
    writer.add_rope_freq_base(1e6)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    for key, field in source.fields.items():
        if key.startswith("tokenizer."):
            value = "qwen2" if key == "tokenizer.ggml.pre" else field.contents()  # as Qwen2.5 GGUFs name it
            if isinstance(value, list):
                writer.add_array(key, value)
            elif isinstance(value, str):
                writer.add_string(key, value)
            elif isinstance(value, bool):
                writer.add_bool(key, value)
            else:
                writer.add_uint32(key, int(value))
    for name, dims in tensors:
        dtype = np.float32 if len(dims) == 1 else np.float16  # norms and biases stay f32, as converters write them
        writer.add_tensor_info(name, dims, np.dtype(dtype), int(np.prod(dims)) * np.dtype(dtype).itemsize)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    rng = np.random.default_rng(0)
    for name, dims in tensors:
        if len(dims) == 1:
            writer.write_tensor_data(np.ones(dims, dtype=np.float32) if name.endswith("norm.weight")
                                     else np.zeros(dims, dtype=np.float32))
        else:
            writer.write_tensor_data((rng.standard_normal(dims, dtype=np.float32) * 0.02).astype(np.float16))
    writer.close()
    return sum(int(np.prod(d)) for _, d in tensors)


def run_path(code: str, gguf: Path, out: Path, timeout: int) -> dict:
    """Run one materialise in a fresh process; its own peak RSS and wall time."""
    script = ("import sys, time\nfrom pathlib import Path\nGGUF, OUT = Path(sys.argv[1]), Path(sys.argv[2])\n"
              "t = time.perf_counter()\n" + code +
              "from vault_agent.train.memory import peak_rss_gib\n"
              "print('RESULT', peak_rss_gib(), time.perf_counter() - t)\n")
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-c", script, str(gguf), str(out)], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "why": f"timed out after {timeout} s"}
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    if done.returncode != 0 or not line:
        return {"ok": False, "why": f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}",
                "seconds": round(time.perf_counter() - started, 1)}
    _, peak, seconds = line[0].split()
    disk = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"ok": True, "peak_rss_gib": round(float(peak), 3), "seconds": round(float(seconds), 1),
            "cache_gib": round(disk / GIB, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="0.5b,1.5b")
    parser.add_argument("--old-for", default="0.5b", help="sizes to also run the old path on ('' for none)")
    parser.add_argument("--timeout", type=int, default=1200)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args()
    sizes = ["smoke"] if args.smoke else [s for s in args.sizes.split(",") if s]
    old_for = set(sizes) if args.smoke else {s for s in args.old_for.split(",") if s}

    from vault_agent.llm.backend import resolve_model_path

    bundled = resolve_model_path("bundled")
    results = {"note": "random qwen2 models, f16 GGUF, the bundled 49k vocabulary; each path in its own process. "
                       "Shared, noisy machine: memory figures are stable, times are not.", "models": {}}
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            gguf = Path(tmp) / f"qwen2-{size}.gguf"
            params = write_random_qwen2(gguf, SHAPES[size], bundled)
            bf16_gib = params * 2 / GIB
            row = {"params": params, "bf16_gib": round(bf16_gib, 3), "gguf_gib": round(gguf.stat().st_size / GIB, 3),
                   "target_peak_gib": round(1.5 * bf16_gib + 1, 3)}
            for name, code in (("new", NEW), ("old", OLD)):
                if name == "old" and size not in old_for:
                    continue
                got = run_path(code, gguf, Path(tmp) / name, args.timeout)
                if got.get("ok"):
                    got["peak_over_bf16"] = round(got["peak_rss_gib"] / bf16_gib, 2)
                    got["within_target"] = got["peak_rss_gib"] <= row["target_peak_gib"]
                row[name] = got
                print(size, name, got, flush=True)
            if row.get("old", {}).get("ok") and row["new"].get("ok"):
                row["old_peak_over_new_peak"] = round(row["old"]["peak_rss_gib"] / row["new"]["peak_rss_gib"], 2)
            results["models"][size] = row
    write_result("materialise_bench", results, args.out)


if __name__ == "__main__":
    main()
