"""The gate asks llama.cpp for logits at the answer positions only (llm/lora.py BatchDecoder): its
margins, KL to the base and perplexity must be what every position's logits (Llama's logits_all,
the way the gate scored before) give, within 1e-3 nats, prompts longer than one batch included."""

from __future__ import annotations

import numpy as np
import pytest
from random_lora import random_lora
from test_gate import NOTES, PAIRS

from vault_agent.llm.lora import BatchDecoder, LoraSlot, adapter_safe_loading, import_llama_cpp
from vault_agent.train.gate import completion_text, score_all
from vault_agent.train.llama_scorer import LlamaScorer

ROWS = PAIRS


def _log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _every_position(gguf, adapter, tokenised, n_ctx):
    """Per adapter setting (base, adapter), each answer's log-probs from a logits_all pass over the
    whole prompt + answer, in a context of its own."""
    with adapter_safe_loading():
        llm = import_llama_cpp().Llama(model_path=str(gguf), n_ctx=n_ctx, logits_all=True, verbose=False)
    slot = LoraSlot(llm)
    try:
        out = {}
        for name, path in (("base", None), ("adapter", adapter)):
            slot.use(None if path is None else slot.load(path))
            rows = []
            for ids, at in tokenised:
                llm.reset()
                llm.eval(ids)
                rows.append(_log_softmax(llm.scores[at - 1: len(ids) - 1]))
            out[name] = rows
            nll, count = 0.0, 0
            for text in NOTES:
                ids = llm.tokenize(text.encode(), add_bos=True, special=False)
                llm.reset()
                llm.eval(ids)
                lp = _log_softmax(llm.scores[: len(ids) - 1])
                nll -= float(lp[np.arange(len(ids) - 1), ids[1:]].sum())
                count += len(ids) - 1
            out[name + " perplexity"] = float(np.exp(nll / count))
        return out
    finally:
        slot.close()
        llm.close()


@pytest.mark.slow
def test_answer_only_logits_give_the_figures_every_position_gives(bundled_gguf, tmp_path):
    n_ctx = 512
    adapter = random_lora(bundled_gguf, tmp_path / "a.gguf")
    with LlamaScorer(bundled_gguf, None, n_ctx) as scorer:
        tokenised = [scorer.answer_tokens(r["prompt"], completion_text(r[side])) for r in ROWS
                     for side in ("chosen", "rejected")]
        # a prompt longer than one llama_decode call: decoded in chunks, the same logits
        ids, at = tokenised[0]
        whole = scorer.log_probs(ids, at)
        scorer.decoder.close()
        scorer.decoder = BatchDecoder(scorer.llm, size=at // 3)
        assert np.abs(scorer.log_probs(ids, at) - whole).max() < 1e-4
    base, adapted = score_all(bundled_gguf, [(None, None), ("v1", adapter)], ROWS, NOTES, n_ctx=n_ctx)

    ref = _every_position(bundled_gguf, adapter, tokenised, n_ctx)
    means = {k: [float(lp[np.arange(len(ids) - at), ids[at:]].mean()) for lp, (ids, at) in zip(ref[k], tokenised)]
             for k in ("base", "adapter")}
    for scores, key in ((base, "base"), (adapted, "adapter")):
        margins = [means[key][i] - means[key][i + 1] for i in range(0, len(tokenised), 2)]
        assert scores.pairs == len(ROWS)
        assert np.abs(np.array(scores.margins) - margins).max() < 1e-3, (scores.margins, margins)
        assert scores.perplexity == pytest.approx(ref[key + " perplexity"], rel=1e-3)
    kl = sum(float((np.exp(a) * (a - b)).sum()) for a, b in zip(ref["adapter"], ref["base"]))
    positions = sum(len(b) for b in ref["base"])
    assert adapted.kl_to_base > 0.01  # the adapter really moves the model, so the comparison means something
    assert adapted.kl_to_base == pytest.approx(kl / positions, abs=1e-3)
