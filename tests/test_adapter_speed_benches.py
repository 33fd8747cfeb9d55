"""The adapter-speed benchmarks (decode with an adapter, the gate's time per pair) run end to end in
their --smoke configuration; the figures of a smoke run mean nothing, the JSON's shape does."""

from __future__ import annotations

import pytest
from test_benchmarks_smoke import run_smoke


@pytest.mark.slow
def test_adapter_decode_bench_smoke(tmp_path):
    result = run_smoke("adapter_decode_bench.py", tmp_path)
    assert result["tokens_per_s"]["base"] > 0 and result["over_base"]["all-linear r16"] > 0
    assert {"merged all-linear r16 q4_1", "merged all-linear r16 q8_0"} <= set(result["tokens_per_s"])
    assert set(result["merge"]["kl_runtime_adapter_to"]) == {"base", "merged q4_1", "merged q8_0", "merged f16"}


@pytest.mark.slow
def test_gate_bench_smoke(tmp_path):
    result = run_smoke("gate_bench.py", tmp_path)
    assert result["pairs"]["scored_first_gate"] == 3
    assert result["served_as"] == {"runtime": "runtime", "auto": "merged"}
    assert all(v > 0 for v in result["seconds_per_pair"].values()) and result["auto_over_runtime"]["nightly"] > 0
    assert result["logits_all_before"]["max_margin_difference_nats"] < 1e-3
    # the nightly gate took the incumbent's figures from its own gate, unchanged, in either mode
    assert result["pairs"]["nightly_reused_for_incumbent"] == {"runtime": 3, "auto": 3}
    assert result["nightly_margins_equal_incumbents_own_gate"] == {"runtime": True, "auto": True}


@pytest.mark.slow
def test_merge_bench_smoke(tmp_path):
    result = run_smoke("merge_bench.py", tmp_path)
    assert result["training"]["steps"] >= 1 and result["heldout_pairs"] == 4
    assert {"base", "runtime adapter", "merged q4_1", "merged q5_1", "merged q5_0", "merged q8_0"} == set(result["quality"])
    assert all(result["tokens_per_s"][k] > 0 for k in result["quality"] if k != "base")
    assert result["merge"]["merged_gguf_mb"]["q8_0"] > result["merge"]["merged_gguf_mb"]["q4_1"]


@pytest.mark.slow
def test_served_copy_bench_smoke(tmp_path):
    result = run_smoke("served_copy_bench.py", tmp_path)
    assert result["copy_over_file"]["prompt"]["64"] > 0 and result["copy_over_file"]["decode"] > 0
    assert result["gguf_mb"]["q8_0 copy"] > result["gguf_mb"]["file"]
    assert 0 <= result["kl_copy_to_file_nats_per_token"] < 0.05
