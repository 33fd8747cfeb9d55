"""Each benchmark script runs end to end in a tiny --smoke configuration, so a change that breaks one
shows here and not months later. The figures of a smoke run mean nothing; the shape of the JSON does.
(benchmarks/retrieval_eval.py runs in its own test.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run_smoke(script: str, tmp_path: Path, timeout: int = 600) -> dict:
    out = tmp_path / f"{script}.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_AGENT_")}
    # the test's own home (conftest agent_home): nothing lands in the machine's data dir, and the
    # model's Q8_0 copy is the session's shared one
    env["VAULT_AGENT_HOME"] = os.environ["VAULT_AGENT_HOME"]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), "--smoke", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    return json.loads(out.read_text())


@pytest.mark.slow  # the bench loads the real embedding model (in its subprocess)
def test_index_bench_smoke(tmp_path):
    result = run_smoke("index_bench.py", tmp_path)
    assert result["config"]["notes"] == 30 and result["config"]["chunks"] >= 30  # the smoke vault, all indexed
    assert result["full_index"]["seconds"] > 0 and result["full_index"]["notes_per_s"] > 0


@pytest.mark.slow  # the bench loads both embedding backends (and exports the int8 model once)
def test_embed_backend_bench_smoke(tmp_path):
    result = run_smoke("embed_backend_bench.py", tmp_path)
    runs = result["runs"]
    assert runs["torch"][0]["chunks"] == runs["onnx-int8"][0]["chunks"] >= 20  # the same vault, all embedded
    assert result["throughput_ratio_onnx_int8_over_torch"] > 0


@pytest.mark.slow  # the bench's daemon indexes its vault with the real embedding model
def test_feedback_bench_smoke(tmp_path):
    result = run_smoke("feedback_bench.py", tmp_path)
    for phase in ("http_feedback", "preference_log_rate_in_process", "bare_sqlite_insert_loop"):
        assert result[phase]["writes"] > 0 and result[phase]["writes_per_s"] > 0, phase
    assert result["setup"]["daemon_exit_code"] in (0, 130)  # a clean stop on SIGINT, as `vault-agent serve`


@pytest.mark.slow
def test_serve_bench_smoke(tmp_path):
    result = run_smoke("serve_bench.py", tmp_path)
    assert result["ours"]["token_events"] > 0 and result["raw_llama_cpp"]["token_events"] > 0
    sampling = result["setup"]["raw"]["sampling"]
    assert sampling["max_tokens"] == 4 and "repeat_penalty" in sampling  # from the backend's own arguments
    assert result["setup"]["daemon_exit_code"] in (0, 130)  # a clean stop on SIGINT, as `vault-agent serve`
    # the indexing-load passes ran while the daemon indexed the notes the bench added
    load = result["setup"]["indexing_load"]["ours"]
    assert load["index_at_start"]["notes_total"] >= result["setup"]["index"]["notes_total"] + 40
    assert result["decode_grid"]["ours (daemon)"]["load"]["token_events"] > 0
    assert "| ours (daemon) |" in result["decode_grid_table"]


def test_openai_bench_smoke(tmp_path):
    result = run_smoke("openai_bench.py", tmp_path)
    for route in ("ask_stream", "openai_stream"):
        assert result[route]["ttft_ms_median"] > 0 and result[route]["tokens_median"] > 1, route
    assert result["ratio_openai_to_ask"]["ttft"] > 0 and result["ratio_openai_to_ask"]["tokens_per_s"] > 0
    assert result["setup"]["daemon_exit_code"] in (0, 130)


def test_models_list_bench_smoke(tmp_path):
    result = run_smoke("models_list_bench.py", tmp_path)
    assert result["config"]["models"] == 6 and result["cli_models_list_s"] > 0
    assert result["header_read_ms"]["ours"] > 0 and result["header_read_ms"]["gguf.GGUFReader"] > 0


@pytest.mark.slow  # two daemons with the real models, one per embedding backend
def test_serve_backend_ab_smoke(tmp_path):
    result = run_smoke("serve_backend_ab.py", tmp_path)
    assert set(result["backends"]) == {"onnx-int8", "torch"}
    for figures in result["backends"].values():
        assert figures["exit_code"] in (0, 130)  # stopped by SIGINT, as Ctrl-C: 130 is its usual code
        assert figures["memory"]["peak_rss_mb"] > 0
        assert figures["load"]["token_events"] > 0  # it answered while the added notes were being indexed
