"""benchmarks/train_bench.py --smoke: the trainer-vs-plain throughput measurement runs end to end
(tiny random llama, 2 steps) and writes its JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run_bench(tmp_path, *args: str) -> dict:
    """benchmarks/train_bench.py with `args`; its JSON."""
    out = tmp_path / "train_bench.json"
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "train_bench.py"), *args, "--out", str(out)],
                         capture_output=True, text=True, timeout=1200, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_train_bench_smoke_writes_the_figures(tmp_path):
    data = run_bench(tmp_path, "--smoke", "--no-synthetic")
    assert data["steps"] == 2 and data["tokens_per_step"] > 0
    assert data["trainer_tokens_per_s"] > 0 and data["plain_peft_tokens_per_s"] > 0
    assert 0 < data["trainer_vs_plain"] < 5
    assert data["plan"] == {"bf16": False, "gradient_checkpointing": True, "optim": "adamw_torch",
                            "dtype": "float32"}
    assert data["peak_rss_mb"] > 100


@pytest.mark.slow
def test_train_bench_rag_smoke_runs_the_retrain_against_the_old_layout(tmp_path):
    """--rag at smoke size: the product's retrain (bundled model) and the pre-plan layout on the
    same RAG pairs, each with its peak memory and speed."""
    data = run_bench(tmp_path, "--rag", "--smoke")
    new, old = data["retrain"], data["before_layout"]
    assert new["steps"] >= 1 and new["too_long_left_out"] == 0 and new["memory"]["peak_rss_gib"] > 0.3
    assert new["plan"]["gradient_checkpointing"] and new["plan"]["micro_batch"] == 1
    assert old["steps"] == 1 and old["peak_rss_gib"] > 0.3 and old["tokens_per_s"] > 0
    assert data["tokens_per_s_ratio_new_over_before"] > 0
    assert set(new["stages_s"]) >= {"planning for the free memory", "preparing the training base", "training"}


def test_cuda_bench_pairs_have_the_requested_length():
    """--cuda builds its own word tokenizer and pairs (no downloads there): each side is exactly --seq tokens."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import train_bench

    tok = train_bench._word_tokenizer(1000)
    pairs = train_bench._token_pairs(3, 512, 1000)
    for p in pairs:
        prompt = tok(p["prompt"], add_special_tokens=False)["input_ids"]
        chosen = tok(p["chosen"], add_special_tokens=False)["input_ids"]
        assert len(prompt) + len(chosen) == 511 and tok.unk_token_id not in prompt + chosen
