"""serve_bench.py's figures from timed runs: decode rate, time to first token, best-of-passes,
the ours-vs-raw comparison and the decode grid's cells and table."""

from __future__ import annotations

from _common import percentile, summary_ms


def decode_rate(runs: list[dict]) -> float:
    """Aggregate decode tokens/s: tokens after the first over the time between first and last token."""
    tokens = sum(max(r["token_events"] - 1, 0) for r in runs)
    seconds = sum(r["last"] - r["first"] for r in runs if r["first"] is not None)
    return round(tokens / seconds, 1) if seconds > 0 else float("nan")


def ttft(runs: list[dict]) -> list[float]:
    return [r["first"] - r["start"] for r in runs if r["first"] is not None]


def best_runs(passes: list[list[dict]]) -> list[dict]:
    """Per question, the pass with the shortest request: on a shared machine the slow passes are the
    ones another job time-sliced (llama.cpp's threads degrade badly when they lose a core)."""
    return [min(runs, key=lambda r: r["end"] - r["start"]) for runs in zip(*passes)]


def ours_figures(runs: list[dict]) -> dict:
    finals = [r["final"]["timings"] for r in runs]
    retrieval = [t["retrieval_ms"] / 1000 for t in finals]
    client_total = [r["end"] - r["start"] for r in runs]
    return {
        "ttft_client": summary_ms(ttft(runs)),
        "ttft_server_first_token_ms": summary_ms([t["first_token_ms"] / 1000 for t in finals]),
        "decode_tokens_per_s": decode_rate(runs),
        "token_events": sum(r["token_events"] for r in runs),
        "final_timings_tokens_per_s": round(
            sum(t["tokens"] for t in finals) / sum(t["generation_ms"] / 1000 for t in finals), 1),
        "retrieval": summary_ms(retrieval),
        "retrieval_share_of_total": round(sum(retrieval) / sum(client_total), 4),
        "retrieval_share_of_ttft": round(sum(retrieval) / sum(ttft(runs)), 4),
        "request_total": summary_ms(client_total),
    }


def raw_figures(runs: list[dict]) -> dict:
    return {
        "ttft": summary_ms(ttft(runs)),
        "decode_tokens_per_s": decode_rate(runs),
        "token_events": sum(r["token_events"] for r in runs),
        "request_total": summary_ms([r["end"] - r["start"] for r in runs]),
    }


def comparison(ours: list[dict], raw: list[dict]) -> dict:
    ours_ttft, raw_ttft = ttft(ours), ttft(raw)
    server_ttft = [r["final"]["timings"]["first_token_ms"] / 1000 for r in ours]
    added = [(o - w) * 1000 for o, w in zip(ours_ttft, raw_ttft)]
    added_server = [(o - w) * 1000 for o, w in zip(server_ttft, raw_ttft)]
    return {
        "tokens_per_s_ratio_ours_over_raw": round(decode_rate(ours) / decode_rate(raw), 3),
        "added_first_token_ms_p50": round(summary_ms(ours_ttft)["p50_ms"] - summary_ms(raw_ttft)["p50_ms"], 1),
        "added_first_token_ms_per_question": {"p50_ms": round(percentile(added, 50), 1),
                                              "p95_ms": round(percentile(added, 95), 1)},
        "added_first_token_ms_server_side_per_question": {"p50_ms": round(percentile(added_server, 50), 1),
                                                          "p95_ms": round(percentile(added_server, 95), 1)},
    }


def cell(runs: list[list[dict]] | None) -> dict | None:
    """One grid cell (best of the passes): decode tokens/s and time to the full answer."""
    if not runs:
        return None
    best = best_runs(runs)
    total = [r["end"] - r["start"] for r in best]
    return {"decode_tokens_per_s": decode_rate(best), "full_answer": summary_ms(total), "ttft": summary_ms(ttft(best)),
            "token_events": sum(r["token_events"] for r in best)}


def child_cell(out: dict | None) -> dict | None:
    if out is None or "error" in out:
        return out
    return {**cell(out["passes"]), "OMP_WAIT_POLICY": out["info"]["OMP_WAIT_POLICY"]}


def ratio(a: dict | None, b: dict | None) -> float | None:
    if not a or not b or "error" in a or "error" in b:
        return None
    return round(a["decode_tokens_per_s"] / b["decode_tokens_per_s"], 3)


def grid_table(grid: dict) -> str:
    lines = ["| decode | idle tok/s | idle full answer p50 | indexing load tok/s | load full answer p50 |",
             "|---|---|---|---|---|"]
    for name, row in grid.items():
        cells = []
        for key in ("idle", "load"):
            c = row.get(key)
            if not c or "error" in c:
                cells += [str((c or {}).get("error", "-")), "-"]
            else:
                cells += [f"{c['decode_tokens_per_s']:.1f}", f"{c['full_answer']['p50_ms'] / 1000:.2f} s"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
