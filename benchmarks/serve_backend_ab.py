"""The daemon under indexing load on each embedding backend, measured in one run: time to first
token, decode tokens/s and the daemon's peak RSS, idle and while it indexes added notes.

Each backend gets its own daemon on a fresh copy of the sample vault (serve_bench.py's
daemon_session, without its grid), in turn, with the same questions and the same added notes.

    .venv/bin/python benchmarks/serve_backend_ab.py [--backends onnx-int8,torch] [--questions 10]
        [--passes 2] [--load-notes 1500] [--out f.json] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402
from _daemon import NoiseMonitor  # noqa: E402
from _serve_figures import cell  # noqa: E402
from serve_bench import QUESTIONS, daemon_session  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="onnx-int8,torch", help="index.embedding_backend values, in turn")
    parser.add_argument("--questions", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--passes", type=int, default=2, help="per question the fastest pass counts")
    parser.add_argument("--load-notes", type=int, default=1500, help="notes added for the indexing-load passes")
    parser.add_argument("--out")
    parser.add_argument("--smoke", action="store_true", help="one short question, a small load (figures mean nothing)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.questions, args.max_tokens, args.passes, args.load_notes = 1, 4, 1, 40
    questions = [json.loads(line)["question"] for line in QUESTIONS.read_text().splitlines() if line.strip()]
    session = SimpleNamespace(passes=args.passes, load_notes=args.load_notes, grid=False, clients=1)
    monitor = NoiseMonitor().start()
    report: dict = {"questions": args.questions, "passes": args.passes, "load_notes": args.load_notes, "backends": {}}
    with tempfile.TemporaryDirectory(prefix="va-serve-ab-") as root:
        for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
            settings = {"VAULT_AGENT_LLM__MAX_TOKENS": str(args.max_tokens),
                        "VAULT_AGENT_INDEX__EMBEDDING_BACKEND": backend}
            out = daemon_session(Path(root), backend.replace("-", "_"), questions[: args.questions], questions[-1],
                                 session, monitor, settings, main=False)
            report["backends"][backend] = {"idle": cell(out["idle"]), "load": cell(out.get("load")),
                                           "index_at_end": out.get("index_at_end"), "memory": out["memory"],
                                           "exit_code": out["exit_code"]}
            load = report["backends"][backend]["load"] or {}
            print(f"{backend}: under load {load.get('decode_tokens_per_s')} tokens/s, first token p50 "
                  f"{(load.get('ttft') or {}).get('p50_ms')} ms, peak RSS {out['memory']['peak_rss_mb']} MB", flush=True)
    report["other_cpu_load_by_phase"] = monitor.stop()  # timings taken while another job ran show here
    write_result("serve_backend_ab_smoke" if args.smoke and not args.out else "serve_backend_ab", report, args.out)
    return report


if __name__ == "__main__":
    main()
