"""benchmarks/variants_bench.py --smoke: every variant row is trained (one step on the bundled model)
or names why it could not be, and the trained ones get the gate's figures and eval fact coverage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_variants_bench_smoke_writes_one_row_per_variant(tmp_path):
    out = tmp_path / "variants_bench.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_AGENT_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "variants_bench.py"), "--smoke",
                          "--workdir", str(tmp_path / "work"), "--out", str(out)],
                         capture_output=True, text=True, timeout=1200, env=env, cwd=tmp_path)
    assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-3000:])
    data = json.loads(out.read_text())
    rows = {r["variant"]: r for r in data["rows"]}
    assert list(rows) == ["dpo", "dpo_sft", "dynamic_beta", "margin", "kto"]
    assert data["data"]["heldout_pairs"] >= 1 and data["data"]["train_pairs"] > data["data"]["heldout_pairs"]
    dpo = rows["dpo"]  # plain DPO is always in the build: it must have every figure
    assert not dpo.get("error"), dpo
    assert dpo["steps"] == 1 and dpo["train_seconds"] > 0
    assert 0 <= dpo["heldout_accuracy"] <= 1 and dpo["heldout_pairs"] == data["base"]["heldout_pairs"]
    assert dpo["kl_to_base"] > 0 and dpo["perplexity"] > 1 and "perplexity_change_pct" in dpo
    assert 0 <= dpo["fact_coverage"] <= 1 and data["eval"]["questions"] == 1
    for name, row in rows.items():  # every row: its figures, or the reason it has none
        assert row.get("error") or row.get("kl_to_base") is not None, (name, row)
        assert row["label"] in data["table"]
    assert data["table"].count("\n") == len(rows) + 2  # header, rule, base, one line per variant
    assert "| base (no adapter) |" in run.stdout
