"""benchmarks/swap_bench.py runs end to end (tiny sizes) and its JSON holds the figures it promises."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow
def test_swap_bench_smoke_run_writes_its_figures(tmp_path):
    out = tmp_path / "swap.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "swap_bench.py"), "--smoke", "--out", str(out)],
                   check=True, env=env, cwd=REPO / "benchmarks", capture_output=True, timeout=600)
    data = json.loads(out.read_text())
    assert data["swap_idle"]["n"] == 4 and data["swap_idle"]["p95_ms"] > 0
    assert data["under_load"]["failed"] == 0
    assert data["decode_tokens_per_s"]["adapter"] > 0 and data["decode_tokens_per_s"]["no_adapter"] > 0
    assert data["gate"]["scored"] == 2
    # the default serves the bundled model's adapter from a merged copy; the runtime LoRA is measured beside it
    assert data["served_as"] == "merged"
    assert data["llm.adapter_serving"]["runtime"]["served_as"] == "runtime"
    assert data["llm.adapter_serving"]["runtime"]["under_load"]["failed"] == 0
