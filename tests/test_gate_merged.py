"""The gate scores an adapter the way the daemon will serve it (llm.adapter_serving): on the bundled
model that is a merged Q8_0 copy (llm/merged_copy.py), built by the gate beside the candidate so
that activation finds it. The real bundled model, llama.cpp and gguf-py."""

from __future__ import annotations

import logging

import pytest
from random_lora import random_lora
from test_gate import NOTES, PAIRS

from vault_agent.llm import merged_copy
from vault_agent.train.gate import score_all, score_examples


@pytest.mark.slow
def test_the_gate_scores_the_merged_copy_the_daemon_serves_and_keeps_its_figures_apart(bundled_gguf, tmp_path):
    (tmp_path / "v0002").mkdir()
    adapter = random_lora(bundled_gguf, tmp_path / "v0002" / "adapter.gguf", ("attn_q", "attn_v", "ffn_down"),
                          rank=8, scale=0.05)
    cache = tmp_path / "gate-scores"
    base, runtime = score_all(bundled_gguf, [(None, None), ("v0002", adapter)], PAIRS, NOTES, n_ctx=512,
                              cache_dir=cache)
    assert not list(tmp_path.glob("v0002/*.merged-*.gguf"))  # runtime serving builds no copy
    assert runtime.served_as == "runtime" and base.served_as is None

    (merged,) = score_all(bundled_gguf, [("v0002", adapter)], PAIRS, NOTES, n_ctx=512, cache_dir=cache,
                          serving="auto")
    copy = merged_copy.merged_path(bundled_gguf, adapter)
    assert copy.is_file() and merged.served_as == "merged"
    assert merged.reused == 0  # a runtime LoRA's figures are not taken for the copy's
    # the copy does what the LoRA does: its move from the base and its margins agree closely
    assert runtime.kl_to_base > 0.05
    assert merged.kl_to_base == pytest.approx(runtime.kl_to_base, rel=0.25)
    distance = lambda xs, ys: sum(abs(float(x) - float(y)) for x, y in zip(xs, ys))  # noqa: E731
    assert distance(merged.margins, runtime.margins) < 0.5 * distance(runtime.margins, base.margins)
    # (Q8_0 against Q4_1 matmuls moves perplexity on two short notes by a few percent)
    assert merged.perplexity == pytest.approx(runtime.perplexity, rel=0.1)
    assert merged.perplexity != pytest.approx(base.perplexity, rel=1e-4)

    # the next gate reuses the copy and its figures
    built = copy.stat().st_mtime_ns
    (again,) = score_all(bundled_gguf, [("v0002", adapter)], PAIRS, NOTES, n_ctx=512, cache_dir=cache,
                         serving="auto")
    assert again.reused == len(PAIRS) and again.margins == merged.margins
    assert copy.stat().st_mtime_ns == built

    # a KTO version's answers are scored through the copy as well
    rows = [{"prompt": p["prompt"], "completion": p["chosen"], "label": True} for p in PAIRS]
    rows += [{"prompt": p["prompt"], "completion": p["rejected"], "label": False} for p in PAIRS]
    through_copy = score_examples(bundled_gguf, adapter, rows, n_ctx=512, serving="merged")
    at_run_time = score_examples(bundled_gguf, adapter, rows, n_ctx=512)
    plain = score_examples(bundled_gguf, None, rows, n_ctx=512)
    assert 0 < distance(through_copy, at_run_time) < 0.5 * distance(at_run_time, plain)


@pytest.mark.slow
def test_a_copy_that_cannot_be_built_is_gated_as_the_runtime_lora_it_would_be_served_as(
        bundled_gguf, tmp_path, monkeypatch, caplog):
    adapter = random_lora(bundled_gguf, tmp_path / "adapter.gguf", ("attn_q",), rank=4, scale=0.05)
    (runtime,) = score_all(bundled_gguf, [("v0002", adapter)], PAIRS[:2], [], n_ctx=512)

    def full_disk(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(merged_copy, "ensure_merged", full_disk)
    with caplog.at_level(logging.WARNING, logger="vault_agent.llm.merged_copy"):
        (on_copy,) = score_all(bundled_gguf, [("v0002", adapter)], PAIRS[:2], [], n_ctx=512, serving="merged")
    assert "no merged copy of adapter.gguf (No space left on device)" in caplog.text
    assert on_copy.served_as == "runtime"  # the LoRA on the model's Q8_0 copy, as the daemon would serve it
    assert on_copy.margins == pytest.approx(runtime.margins, abs=0.3)

    # nor the model's own copy: the model file with the LoRA, exactly the runtime figures
    monkeypatch.setattr(merged_copy, "ensure_base_copy", full_disk)
    (on_file,) = score_all(bundled_gguf, [("v0002", adapter)], PAIRS[:2], [], n_ctx=512, serving="merged")
    assert on_file.served_as == "runtime" and on_file.margins == runtime.margins
