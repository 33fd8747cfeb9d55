"""`vault-agent models list` with N GGUF files laid out in the three stores (Ollama manifests + blobs,
LM Studio's publisher/model folders, the Hugging Face cache with snapshot symlinks) in a temp HOME.
Target: under 1 second for 50 models.

Figures: the CLI's wall time (`models list --json`, a fresh process; cold: without the header
cache, every header read) beside the same process running
`vault-agent --help` (interpreter + CLI start-up: the baseline), the in-process listing alone, and
our header reader against `gguf.GGUFReader` on the same files. `--vocab N` gives each file a
tokenizer of N strings (real models: 32k-256k tokens, plus as many merges), the part of a header
that costs time to walk.

    .venv/bin/python benchmarks/models_list_bench.py                 # 50 models, 1000-token headers
    .venv/bin/python benchmarks/models_list_bench.py --vocab 128000  # Llama-3-sized tokenizers
    .venv/bin/python benchmarks/models_list_bench.py --smoke         # seconds: the suite runs this
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _common import peak_rss_mb, write_result  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def write_gguf(path: Path, arch: str, vocab: int) -> Path:
    import gguf
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(8192)
    w.add_file_type(15)
    if vocab:
        w.add_token_list([f"tok{i}" for i in range(vocab)])
        w.add_token_merges([f"t o{i}" for i in range(vocab)])
    w.add_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    for layer in range(4):
        w.add_tensor(f"blk.{layer}.attn_q.weight", np.ones((16, 16), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def lay_out(home: Path, n: int, vocab: int) -> None:
    """n models: a third in each store."""
    archs = ("llama", "qwen2", "qwen3", "gemma2", "phi3")
    ollama = home / ".ollama" / "models"
    lms = home / ".lmstudio" / "models"
    hf = home / ".cache" / "huggingface" / "hub"
    for i in range(n):
        arch = archs[i % len(archs)]
        store = i % 3
        if store == 0:
            digest = f"{i:064x}"
            write_gguf(ollama / "blobs" / f"sha256-{digest}", arch, vocab)
            manifest = ollama / "manifests" / "registry.ollama.ai" / "library" / f"model{i}" / "latest"
            manifest.parent.mkdir(parents=True, exist_ok=True)
            manifest.write_text(json.dumps({"layers": [{"mediaType": "application/vnd.ollama.image.model",
                                                        "digest": f"sha256:{digest}"}]}))
        elif store == 1:
            write_gguf(lms / "publisher" / f"Model{i}-GGUF" / f"Model{i}-Q4_K_M.gguf", arch, vocab)
        else:
            repo = hf / f"models--org--Model{i}-GGUF"
            blob = write_gguf(repo / "blobs" / f"{i:040x}", arch, vocab)
            snap = repo / "snapshots" / ("a" * 40)
            snap.mkdir(parents=True)
            (snap / f"Model{i}-Q4_K_M.gguf").symlink_to(blob)


def cli_seconds(args: list[str], env: dict, runs: int, cold: bool = False) -> list[float]:
    """Wall seconds of each run; `cold`: the header cache removed first (every header read again)."""
    cache = Path(env["VAULT_AGENT_HOME"]) / "state" / "model_headers.json"
    out = []
    for _ in range(runs):
        if cold:
            cache.unlink(missing_ok=True)
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "vault_agent.cli", *args], env=env, capture_output=True,
                              text=True, timeout=600)
        out.append(time.perf_counter() - t0)
        assert done.returncode == 0, done.stderr
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, default=50)
    ap.add_argument("--vocab", type=int, default=1000, help="tokenizer strings per file (and as many merges)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--smoke", action="store_true", help="6 models, 1 run")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.smoke:
        args.models, args.runs, args.vocab = 6, 1, 100

    with tempfile.TemporaryDirectory(prefix="models-bench-") as tmp:
        home = Path(tmp) / "home"
        lay_out(home, args.models, args.vocab)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_AGENT_", "OLLAMA_", "HF_HUB_CACHE"))}
        env.update(HOME=str(home), VAULT_AGENT_HOME=str(Path(tmp) / "agent"), HF_HUB_OFFLINE="1",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])))
        env.pop("HF_HOME", None)
        listed = json.loads(subprocess.run([sys.executable, "-m", "vault_agent.cli", "models", "list", "--json"],
                                           env=env, capture_output=True, text=True, timeout=600).stdout)
        found = [r for r in listed if r["source"] != "bundled"]
        assert len(found) == args.models, f"listed {len(found)} of {args.models}"
        assert all(r["can"] == "serve+train" for r in found), [r for r in found if r["can"] != "serve+train"]

        cli_cold = cli_seconds(["models", "list", "--json"], env, args.runs, cold=True)
        cli_list = cli_seconds(["models", "list", "--json"], env, args.runs)
        cli_help = cli_seconds(["--help"], env, args.runs)

        os.environ["HOME"] = env["HOME"]
        for var in ("OLLAMA_MODELS", "HF_HOME", "HF_HUB_CACHE"):
            os.environ.pop(var, None)
        from vault_agent.config import Settings
        from vault_agent.models.catalog import list_models
        from vault_agent.models.gguf_header import read_header

        in_process = []
        os.environ["VAULT_AGENT_HOME"] = env["VAULT_AGENT_HOME"]
        for _ in range(args.runs):
            t0 = time.perf_counter()
            rows = list_models(Settings())
            in_process.append(time.perf_counter() - t0)
        assert len(rows) == args.models + 1

        import gguf

        sample = [Path(r["path"]) for r in found[:5]]
        t0 = time.perf_counter()
        for path in sample:
            read_header(path)
        ours = (time.perf_counter() - t0) / len(sample)
        t0 = time.perf_counter()
        for path in sample:
            gguf.GGUFReader(path)
        theirs = (time.perf_counter() - t0) / len(sample)

    med = statistics.median
    result = {
        "config": {"models": args.models, "vocab_strings_per_file": 2 * args.vocab, "runs": args.runs,
                   "cpus": os.cpu_count(), "note": "shared, noisy machine: compare ratios within one run"},
        "cli_models_list_cold_s (no header cache)": round(med(cli_cold), 3),
        "cli_models_list_s": round(med(cli_list), 3),
        "cli_help_s (baseline: start-up)": round(med(cli_help), 3),
        "listing_beyond_startup_s": round(med(cli_list) - med(cli_help), 3),
        "in_process_list_s (cached)": round(med(in_process), 3),
        "per_model_ms": round(med(in_process) / (args.models + 1) * 1000, 2),
        "header_read_ms": {"ours": round(ours * 1000, 2), "gguf.GGUFReader": round(theirs * 1000, 2),
                           "speedup": round(theirs / ours, 1) if ours else None},
        "target_under_1s": {"cold": med(cli_cold) < 1.0, "cached": med(cli_list) < 1.0},
        "peak_rss_mb": peak_rss_mb(),
    }
    write_result("models_list_bench", result, args.out)


if __name__ == "__main__":
    main()
