"""Indexing throughput per embedding backend (index.embedding_backend), measured in one run:
the full index (`reconcile()`) of the same seeded synthetic vault with `torch` and with `onnx-int8`,
interleaved round by round (torch, onnx-int8, torch, onnx-int8, ...) so that both see the same
competition for the cores on a shared machine; each round indexes into a fresh index folder.

The int8 export (once, cached) and each model's load are timed apart, outside the index time.
`--uncapped` also indexes with each backend as it batched before index.batch_tokens (64 chunks per
batch whatever their length), in the same rounds, so the token cap's own gain is measured too.

    .venv/bin/python benchmarks/embed_backend_bench.py [--notes 2000] [--rounds 1] [--uncapped] [--out results.json] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_mb, write_result  # noqa: E402
from synthetic_vault import VaultGen  # noqa: E402

BACKENDS = ("torch", "onnx-int8")


def log(msg: str) -> None:
    print(f"[embed_backend_bench {time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}] {msg}",
          file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notes", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=1, help="full indexes per backend, interleaved")
    parser.add_argument("--uncapped", action="store_true",
                        help="also index with no token cap per batch (the batching before index.batch_tokens)")
    parser.add_argument("--out")
    parser.add_argument("--smoke", action="store_true", help="a 20-note run that checks the script works")
    args = parser.parse_args(argv)
    if args.smoke:
        args.notes, args.rounds = 20, 1
    with tempfile.TemporaryDirectory(prefix="va-backend-bench-") as tmp:
        os.environ["VAULT_AGENT_HOME"] = str(Path(tmp) / "home")  # never the user's own index
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return run(args, Path(tmp))


def run(args, root: Path) -> dict:
    from vault_agent.config import load_settings
    from vault_agent.index.embedder import Embedder
    from vault_agent.index.indexer import Indexer
    from vault_agent.paths import AppDirs

    vault = root / "vault"
    vault.mkdir()
    sizes = VaultGen(args.seed, args.notes).write(vault)
    log(f"generated {len(sizes)} notes, mean {sum(sizes) / len(sizes):.0f} chars")
    base = load_settings(vault=vault)
    cache = root / "embedders"
    # label -> (backend, batch_tokens); an uncapped run shares its backend's loaded model
    configs = {b: (b, base.index.batch_tokens) for b in BACKENDS}
    if args.uncapped:
        configs.update({f"{b} uncapped": (b, 1_000_000) for b in BACKENDS})
    embedders, index_settings, load_s = {}, {}, {}
    for label, (backend, batch_tokens) in configs.items():
        index_settings[label] = base.index.model_copy(update={"embedding_backend": backend, "batch_tokens": batch_tokens})
        embedders[label] = Embedder(index_settings[label], cache_dir=cache)
        if label != backend:
            embedders[label]._model = embedders[backend].model
            continue
        t = time.perf_counter()
        embedders[label].embed(["warm-up"])  # for onnx-int8 the first run includes the export
        load_s[label] = round(time.perf_counter() - t, 2)
        embedders[label].embedded_count = 0
        log(f"{label}: loaded (export included for onnx-int8) in {load_s[label]}s")

    rounds: dict[str, list[dict]] = {label: [] for label in configs}
    for r in range(args.rounds):
        for label, (backend, _) in configs.items():
            settings = base.model_copy(update={"index": index_settings[label]})
            home = root / f"home-{label.replace(' ', '-')}-{r}"
            dirs = AppDirs(config=home / "config", data=home / "data", state=home / "state").ensure()
            embedder = embedders[label]
            before = embedder.embedded_count
            indexer = Indexer(settings, vault, dirs, embedder=embedder)
            try:
                w, c = time.perf_counter(), time.process_time()
                indexer.reconcile()
                wall, cpu = time.perf_counter() - w, time.process_time() - c
                chunks = embedder.embedded_count - before
            finally:
                indexer.close()
            rounds[label].append({"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "chunks": chunks,
                                  "chunks_per_s": round(chunks / wall, 1), "load1": round(os.getloadavg()[0], 2)})
            log(f"round {r + 1} {label}: {chunks} chunks in {wall:.1f}s ({chunks / wall:.1f}/s), cpu {cpu:.1f}s")

    def median(backend: str, key: str) -> float:
        return statistics.median(x[key] for x in rounds[backend])

    ratio = round(median("onnx-int8", "chunks_per_s") / median("torch", "chunks_per_s"), 2)
    cpu_ratio = round(median("torch", "cpu_s") / median("onnx-int8", "cpu_s"), 2)
    report = {
        "notes": args.notes, "rounds": args.rounds, "load_s": load_s, "runs": rounds,
        "throughput_ratio_onnx_int8_over_torch": ratio,
        "cpu_ratio_torch_over_onnx_int8": cpu_ratio,
        "target_1.8x": "PASS" if ratio >= 1.8 else "FAIL",
        "batch_tokens": base.index.batch_tokens,
        "token_cap_gain": {b: round(median(b, "chunks_per_s") / median(f"{b} uncapped", "chunks_per_s"), 2)
                           for b in BACKENDS if f"{b} uncapped" in rounds},
        "peak_rss_mb": peak_rss_mb(),
        "note": "one process, backends interleaved per round; the machine may be shared (see load1)",
    }
    print(f"indexing throughput onnx-int8 / torch: {ratio}x (wall), {cpu_ratio}x (process CPU); "
          f"torch {median('torch', 'chunks_per_s'):.1f}/s, onnx-int8 {median('onnx-int8', 'chunks_per_s'):.1f}/s")
    for backend, gain in report["token_cap_gain"].items():
        print(f"{backend}: {gain}x the throughput of 64 chunks per batch with no token cap")
    write_result("embed_backend_bench_smoke" if args.smoke and not args.out else "embed_backend_bench", report, args.out)
    return report


if __name__ == "__main__":
    main()
