"""The eval gate scores with llama.cpp itself (GGUF base + GGUF LoRA) and promotes only an adapter
that beats the active one without wrecking the language model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import strong_adapter

from vault_agent.train.gate import Rules, Scores, decide, score, write_verdict

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
    from vault_agent.train.llama_scorer import LlamaScorer

    with LlamaScorer(bundled_gguf, None, n_ctx=512) as scorer:
        cpp_mean = scorer.completion_logprob(QUESTION, "Feed the starter every morning.")
    assert abs(cpp_mean - hf_mean) < 0.35, (cpp_mean, hf_mean)  # Q4 quantization noise, not misalignment

    # an adapter of random noise: the gate must see perplexity explode and refuse it
    strong_adapter(hf_base, tmp_path / "noise", ["q_proj", "k_proj", "v_proj", "o_proj"], scale=0.1).unload()
    export_gguf_lora(tmp_path / "noise", bundled_gguf, tmp_path / "noise.gguf")
    noisy = score(bundled_gguf, tmp_path / "noise.gguf", PAIRS, NOTES, n_ctx=512, label="v0001")
    assert noisy.perplexity > base.perplexity * 1.1
    verdict = decide(noisy, base, Rules(max_perplexity_rise_pct=10, min_heldout=1, min_accuracy=0))
    assert not verdict.promote
    assert any("perplexity" in r for r in verdict.reasons)


def test_decide_promotes_only_a_candidate_that_beats_the_active_adapter_on_evidence(tmp_path):
    """Per-pair margins on 10 held-out pairs; the gain over the active adapter must be clear of noise."""
    base_margins = [0.3, 0.2, -0.1, 0.4, 0.1, 0.5, -0.2, 0.3, 0.2, -0.3]  # accuracy 0.7
    active = Scores.from_margins("v0001", base_margins, perplexity=20.0)
    better = Scores.from_margins("v0002", [m + 0.3 for m in base_margins], perplexity=21.0)  # 0.9, +0.3 on every pair
    worse = Scores.from_margins("v0002", [m + 0.3 if i < 5 else -0.4 for i, m in enumerate(base_margins)],
                                perplexity=19.0)  # 0.5
    noise = Scores.from_margins("v0002", [m + d for m, d in zip(base_margins, [0.9, -0.8, 0.7, -0.9, 0.6, -0.5,
                                                                                0.8, -0.7, 0.5, -0.4])],
                                perplexity=20.0)  # same accuracy, mean +0.02 inside the spread
    drifted = Scores.from_margins("v0002", [m + 0.5 for m in base_margins], perplexity=23.0)  # +15%

    assert decide(better, active).promote
    assert not decide(worse, active).promote
    refused = decide(noise, active)
    assert not refused.promote and any("not clearly above 0" in r for r in refused.reasons)
    assert not decide(drifted, active, Rules(max_perplexity_rise_pct=10)).promote
    assert decide(drifted, active, Rules(max_perplexity_rise_pct=20)).promote
    assert not decide(Scores("v0002"), active).promote  # nothing fits: nothing to judge by
    few = decide(Scores.from_margins("v0002", [m + 0.3 for m in base_margins[:4]]),
                 Scores.from_margins("v0001", base_margins[:4]))
    assert not few.promote and any("only 4 held-out pairs, 8 needed" in r for r in few.reasons)

    path = write_verdict(tmp_path, decide(better, active))
    saved = json.loads(path.read_text())
    assert saved["promote"] is True
    assert saved["candidate"]["accuracy"] == 0.9 and saved["active"]["accuracy"] == 0.7  # both sides kept
    assert "margins" not in saved["candidate"]  # the summary and the interval, not every pair
    assert saved["evidence"]["pairs"] == 10 and saved["evidence"]["margin_gain"]["low"] == pytest.approx(0.3)
    assert not list(tmp_path.glob("*.tmp"))
