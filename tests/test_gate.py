"""The eval gate scores with llama.cpp itself (GGUF base + GGUF LoRA) and promotes only an adapter
that beats the active one without wrecking the language model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import strong_adapter

from vault_agent.train.gate import Scores, decide, score, write_verdict

QUESTION = [{"role": "user", "content": "How often do I feed the sourdough starter?"}]
PAIRS = [
    {"prompt": QUESTION, "chosen": [{"role": "assistant", "content": "Feed the starter every morning."}],
     "rejected": [{"role": "assistant", "content": "Zebra quantum mauve bicycle of the the the sprocket."}]},
    {"prompt": [{"role": "user", "content": "What is the capital of France?"}],
     "chosen": "The capital of France is Paris.",
     "rejected": "France capital the is potato Wednesday purple."},
]
NOTES = ["The starter is fed flour and water in equal weights every morning, then left on the counter.",
         "Water the tomato plants deeply twice a week, about 2.5 cm each time."]


@pytest.mark.slow
def test_llama_cpp_scores_match_transformers_and_a_garbage_adapter_is_refused(
        bundled_gguf, hf_base, bundled_tokenizer, tmp_path):
    import torch

    from vault_agent.train.export import export_gguf_lora

    base = score(bundled_gguf, None, PAIRS, NOTES, n_ctx=512, label=None)
    # fluent chosen answers beat word salad on the plain base, per token
    assert base.pairs == 2 and base.accuracy == 1.0 and base.margin > 1.0
    assert 1.0 < base.perplexity < 200

    # same mean token log-prob as transformers on the dequantized base (positions line up)
    text = bundled_tokenizer.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True)
    head = bundled_tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = head + bundled_tokenizer("Feed the starter every morning.<|im_end|>", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(hf_base(torch.tensor([ids])).logits[0].float(), -1)
    hf_mean = float(np.mean([logp[i - 1, ids[i]] for i in range(len(head), len(ids))]))
    from vault_agent.train.gate import LlamaScorer

    with LlamaScorer(bundled_gguf, None, n_ctx=512) as scorer:
        cpp_mean = scorer.completion_logprob(QUESTION, "Feed the starter every morning.")
    assert abs(cpp_mean - hf_mean) < 0.35, (cpp_mean, hf_mean)  # Q4 quantization noise, not misalignment

    # an adapter of random noise: the gate must see perplexity explode and refuse it
    strong_adapter(hf_base, tmp_path / "noise", ["q_proj", "k_proj", "v_proj", "o_proj"], scale=0.1).unload()
    export_gguf_lora(tmp_path / "noise", bundled_gguf, tmp_path / "noise.gguf")
    noisy = score(bundled_gguf, tmp_path / "noise.gguf", PAIRS, NOTES, n_ctx=512, label="v0001")
    assert noisy.perplexity > base.perplexity * 1.1
    verdict = decide(noisy, base, max_perplexity_rise_pct=10)
    assert not verdict.promote
    assert any("perplexity" in r for r in verdict.reasons)


def test_decide_promotes_only_a_candidate_that_beats_the_active_adapter(tmp_path):
    active = Scores("v0001", pairs=10, accuracy=0.6, margin=0.10, perplexity=20.0)
    better = Scores("v0002", pairs=10, accuracy=0.8, margin=0.30, perplexity=21.0)
    worse = Scores("v0002", pairs=10, accuracy=0.5, margin=0.40, perplexity=19.0)
    tie_more_margin = Scores("v0002", pairs=10, accuracy=0.6, margin=0.20, perplexity=20.0)
    drifted = Scores("v0002", pairs=10, accuracy=0.9, margin=0.50, perplexity=23.0)  # +15%

    assert decide(better, active).promote
    assert decide(tie_more_margin, active).promote
    assert not decide(worse, active).promote
    assert not decide(drifted, active, max_perplexity_rise_pct=10).promote
    assert decide(drifted, active, max_perplexity_rise_pct=20).promote
    assert not decide(Scores("v0002"), active).promote  # nothing fits: nothing to judge by

    path = write_verdict(tmp_path, decide(better, active))
    saved = json.loads(path.read_text())
    assert saved["promote"] is True
    assert saved["candidate"]["accuracy"] == 0.8 and saved["active"]["accuracy"] == 0.6  # both sides kept
    assert not list(tmp_path.glob("*.tmp"))
