"""The OpenAI-compatible API's cost over the daemon's own stream, in the same run on the same daemon:
time to first token and decode tokens/s through POST /v1/chat/completions (stream=true, model
vault-agent) against POST /ask/stream, on the same questions (the same retrieval, prompt, model and
settings: the messages the model sees are identical).

Each pass sends every question through one route, then every question through the other (so no
request follows one with the same prompt, whose KV-cache prefix would make it look faster); the
order of the routes alternates between passes. Per question and route the fastest pass counts, so a
pass slowed by another job on a shared machine is rejected (all passes are in the JSON).

    .venv/bin/python benchmarks/openai_bench.py [--questions 6] [--max-tokens 64] [--passes 2]
        [--wait-quiet 600] [--out f.json] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402
from _daemon import DaemonProcess, NoiseMonitor, busy_processes, copy_sample_vault, wait_quiet  # noqa: E402

HERE = Path(__file__).resolve().parent
QUESTIONS = HERE / "data" / "sample_vault_questions.jsonl"


def timed_stream(http, path: str, body: dict, token_of) -> dict:
    """One streamed answer timed on the client: request start, first and last token, token count."""
    t0 = time.perf_counter()
    first = last = None
    tokens = 0
    event = None
    with http.stream("POST", path, json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                if token_of(event, line[6:]):
                    last = time.perf_counter()
                    first = first or last
                    tokens += 1
    if first is None:
        raise RuntimeError(f"{path}: no token came")
    return {"ttft_ms": (first - t0) * 1000, "tokens": tokens,
            "tokens_per_s": (tokens - 1) / (last - first) if tokens > 1 and last > first else None}


def ask_stream(http, question: str) -> dict:
    def token_of(event, data):
        if event == "error":
            raise RuntimeError(f"daemon error: {data}")
        return event == "token"

    return timed_stream(http, "/ask/stream", {"question": question}, token_of)


def openai_stream(http, question: str) -> dict:
    def token_of(_event, data):
        if data == "[DONE]":
            return False
        frame = json.loads(data)
        if "error" in frame:
            raise RuntimeError(f"daemon error: {data}")
        return bool(frame["choices"] and frame["choices"][0]["delta"].get("content"))

    body = {"model": "vault-agent", "stream": True, "messages": [{"role": "user", "content": question}]}
    return timed_stream(http, "/v1/chat/completions", body, token_of)


ROUTES = {"ask_stream": ask_stream, "openai_stream": openai_stream}


def figures(best: list[dict]) -> dict:
    rates = [b["tokens_per_s"] for b in best if b["tokens_per_s"]]
    return {"ttft_ms_median": round(statistics.median(b["ttft_ms"] for b in best), 1),
            "tokens_per_s_median": round(statistics.median(rates), 2) if rates else None,
            "tokens_median": statistics.median(b["tokens"] for b in best), "questions": len(best)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--wait-quiet", type=float, default=0,
                        help="first wait up to this many seconds for the machine to go idle")
    parser.add_argument("--out")
    parser.add_argument("--smoke", action="store_true",
                        help="a seconds-long run that checks the script works (fake chat model; figures mean nothing)")
    args = parser.parse_args()
    if args.smoke:
        args.questions, args.max_tokens, args.passes = 2, 8, 2
    quiet = wait_quiet(args.wait_quiet) if args.wait_quiet else None
    questions = [json.loads(line)["question"] for line in QUESTIONS.read_text().splitlines() if line.strip()]
    questions = questions[: args.questions]

    root = Path(tempfile.mkdtemp(prefix="va-openai-bench-"))
    vault = copy_sample_vault(root)
    monitor = NoiseMonitor().start()
    monitor.phase = "daemon_start"
    daemon = DaemonProcess(vault, root / "home", fake_model=args.smoke,
                           VAULT_AGENT_LLM__MAX_TOKENS=str(args.max_tokens))
    runs: dict[str, list[list[dict]]] = {name: [] for name in ROUTES}
    try:
        daemon.start(monitor=monitor)
        with daemon.client() as http:
            for name, route in ROUTES.items():  # warm-up: the embedder's first query, the threadpool
                route(http, "What is this vault about?")
            for p in range(args.passes):
                order = list(ROUTES) if p % 2 == 0 else list(ROUTES)[::-1]
                for name in order:
                    monitor.phase = name
                    runs[name].append([ROUTES[name](http, q) for q in questions])
        monitor.phase = "between"
        noise_during = busy_processes({os.getpid(), daemon.proc.pid})
    finally:
        rc = daemon.stop()
        noise = monitor.stop()

    best = {name: [min((passes[p][i] for p in range(len(passes))), key=lambda r: r["ttft_ms"])
                   for i in range(len(questions))] for name, passes in runs.items()}
    fig = {name: figures(b) for name, b in best.items()}
    ours, base = fig["openai_stream"], fig["ask_stream"]
    result = {
        "config": {"questions": len(questions), "max_tokens": args.max_tokens, "passes": args.passes,
                   "model": "fake (smoke)" if args.smoke else "bundled llama.cpp model"},
        "ask_stream": base,
        "openai_stream": ours,
        "ratio_openai_to_ask": {
            "ttft": round(ours["ttft_ms_median"] / base["ttft_ms_median"], 3) if base["ttft_ms_median"] else None,
            "tokens_per_s": (round(ours["tokens_per_s_median"] / base["tokens_per_s_median"], 3)
                             if ours["tokens_per_s_median"] and base["tokens_per_s_median"] else None),
        },
        "passes": runs,
        "setup": {"daemon_exit_code": rc, "noise": noise, "busy_after": noise_during, "quiet_wait": quiet,
                  "load_avg": os.getloadavg(), "index": daemon.index},
    }
    write_result("openai_bench", result, args.out)


if __name__ == "__main__":
    main()
