"""A GGUF LoRA merged into a served copy of the base (llm/merge.py) predicts what llama.cpp gives with
the adapter applied at run time, up to the re-quantisation of the merged weights; an adapter made for
another model is refused with a message."""

from __future__ import annotations

import numpy as np
import pytest
from random_lora import random_lora

from vault_agent.errors import UserError
from vault_agent.llm.merge import merge_lora
from vault_agent.train.llama_scorer import LlamaScorer

TEXT = ("The starter is fed flour and water in equal weights every morning, then left on the counter "
        "until it doubles; in summer it is kept in the fridge and fed twice a week.")


def _kl(p_log, q_log) -> float:
    """Mean per-position KL(p || q)."""
    return float((np.exp(p_log) * (p_log - q_log)).sum(-1).mean())


@pytest.mark.slow
def test_merged_copy_predicts_what_the_runtime_adapter_predicts(bundled_gguf, tmp_path):
    targets = ("attn_q", "attn_v", "ffn_down")  # square, narrow and wide weights
    adapter = random_lora(bundled_gguf, tmp_path / "a.gguf", targets, rank=8, scale=0.05)
    summary = merge_lora(bundled_gguf, adapter, tmp_path / "merged.gguf")
    assert summary["merged_tensors"] == 30 * len(targets)
    # re-quantised to the base's own types: the served copy is no bigger than the base
    assert summary["bytes"] <= bundled_gguf.stat().st_size * 1.01

    def log_probs(gguf, lora):
        with LlamaScorer(gguf, lora, n_ctx=256) as scorer:
            ids = scorer.llm.tokenize(TEXT.encode(), add_bos=True, special=False)
            return scorer.log_probs(ids, 1)

    base, runtime = log_probs(bundled_gguf, None), log_probs(bundled_gguf, adapter)
    merged = log_probs(tmp_path / "merged.gguf", None)
    moved = _kl(runtime, base)
    assert moved > 0.05, moved  # the adapter changes the model clearly
    # Q4_1 again: its rounding is about as large as the adapter's change, so much of the move is lost
    assert _kl(runtime, merged) < moved

    merge_lora(bundled_gguf, adapter, tmp_path / "merged8.gguf", weight_type="q8_0")
    assert _kl(runtime, log_probs(tmp_path / "merged8.gguf", None)) < 0.1 * moved


def test_an_adapter_for_another_model_is_refused(bundled_gguf, tmp_path):
    import gguf

    writer = gguf.GGUFWriter(str(tmp_path / "other.gguf"), arch="llama")
    writer.add_string("general.type", "adapter")
    writer.add_float32("adapter.lora.alpha", 8.0)
    writer.add_tensor("blk.0.attn_q.weight.lora_a", np.zeros((4, 1024), dtype=np.float16))
    writer.add_tensor("blk.0.attn_q.weight.lora_b", np.zeros((1024, 4), dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(UserError, match="made for another model"):
        merge_lora(bundled_gguf, tmp_path / "other.gguf", tmp_path / "merged.gguf")
    assert not (tmp_path / "merged.gguf").exists()
