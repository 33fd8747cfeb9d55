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


def test_a_plain_conversion_keeps_weights_whose_rows_are_not_whole_q8_0_blocks(tmp_path):
    """The model's own Q8_0 copy (llm/merged_copy.py) converts every block's matmul weights it can;
    one whose rows are not a multiple of Q8_0's 32-value block stays as it was, instead of the
    whole copy failing."""
    import gguf

    writer = gguf.GGUFWriter(str(tmp_path / "tiny.gguf"), arch="llama")
    writer.add_tensor("blk.0.attn_q.weight", np.ones((4, 48), dtype=np.float32))  # 48: not whole blocks
    writer.add_tensor("blk.0.attn_k.weight", np.ones((4, 64), dtype=np.float32))
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(64, dtype=np.float32))  # 1-D: never converted
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    summary = merge_lora(tmp_path / "tiny.gguf", None, tmp_path / "copy.gguf", weight_type="q8_0", convert_all=True)
    assert (summary["merged_tensors"], summary["converted_tensors"]) == (0, 1)
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(tmp_path / "copy.gguf")).tensors}
    assert types == {"blk.0.attn_q.weight": "F32", "blk.0.attn_k.weight": "Q8_0", "blk.0.attn_norm.weight": "F32"}
