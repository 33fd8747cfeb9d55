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


@pytest.mark.slow
def test_a_prompt_start_shared_with_the_pass_before_is_not_evaluated_again(bundled_gguf, tmp_path):
    """RAG prompts share their system turn and the notes' preamble: each pass evaluates only what
    differs from the one before under the same weights, with the figures a fresh context gives."""
    system = {"role": "system", "content": "You answer questions using only the numbered notes given. " * 4}
    rows = [[system, {"role": "user", "content": f"Notes:\n[1] The jar {i} is kept at {20 + i} degrees.\n"
                                                 f"Question: where is jar {i} kept?"}] for i in range(4)]
    adapter = random_lora(bundled_gguf, tmp_path / "a.gguf", scale=0.05)
    with LlamaScorer(bundled_gguf, None, 512) as scorer, LlamaScorer(bundled_gguf, None, 512) as fresh:
        found = [[scorer.answer_tokens(r, text) for text in ("At 20 degrees [1].", "I don't know.")] for r in rows]
        evaluated = []
        decode = scorer.decoder.decode

        def counted(tokens, pos0, outputs_from):
            evaluated.append(len(tokens))
            return decode(tokens, pos0, outputs_from)

        scorer.decoder.decode = counted
        lora = scorer.load_adapter(adapter)
        for weights in (None, lora):
            scorer.use(weights)
            fresh.use(fresh.load_adapter(adapter) if weights is not None else None)
            for pair in found:
                shared = scorer.answers_log_probs(pair)
                fresh.decoder.clear()
                fresh._cached = []  # a context with nothing in it
                alone = fresh.answers_log_probs(pair)
                assert all(np.abs(a - b).max() < 1e-3 for a, b in zip(shared, alone))
        prompt_tokens = [len(pair[0][0][:pair[0][1]]) for pair in found]
        answer_tokens = sum(len(ids) - 1 - at for pair in found for ids, at in pair)
        # the first prompt under each weights whole, the others from where they differ
        assert sum(evaluated) < 2 * (sum(prompt_tokens) + answer_tokens) - 3 * 2 * 40
