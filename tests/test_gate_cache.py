"""The nightly gate reuses what earlier gates computed (train/score_cache.py): a (base, adapter,
pair) already scored is not scored again, so tonight's gate scores the new candidate and little
else, with the same figures a gate without the cache gives. The real bundled model and llama.cpp."""

from __future__ import annotations

import pytest
from random_lora import random_lora
from test_gate import NOTES, PAIRS

from vault_agent.train import gate
from vault_agent.train.gate import score_all
from vault_agent.train.llama_scorer import LlamaScorer


@pytest.fixture
def passes(monkeypatch):
    """How many llama.cpp passes over a prompt and its answers each score_all made."""
    count = {"n": 0}
    real = LlamaScorer.answers_log_probs

    def counted(self, found):
        count["n"] += 1
        return real(self, found)

    monkeypatch.setattr(LlamaScorer, "answers_log_probs", counted)
    return count


def figures(s):
    return s.margins, s.perplexity, s.kl_to_base


@pytest.mark.slow
def test_a_second_gate_scores_only_what_it_has_not_scored_before_with_the_same_figures(
        bundled_gguf, tmp_path, passes):
    old = random_lora(bundled_gguf, tmp_path / "old.gguf", seed=1)
    new = random_lora(bundled_gguf, tmp_path / "new.gguf", seed=2)
    cache = tmp_path / "gate-scores"
    plain = score_all(bundled_gguf, [("new", new), ("old", old)], PAIRS, NOTES, n_ctx=512)
    assert passes["n"] == 3 * len(PAIRS)  # base (the KL reference), new, old

    # last night: `old` against the base; every pair scored fresh
    passes["n"] = 0
    score_all(bundled_gguf, [("old", old), (None, None)], PAIRS, NOTES, n_ctx=512, cache_dir=cache)
    assert passes["n"] == 2 * len(PAIRS)
    # tonight: `new` against `old`, one new held-out pair among them
    extra = {"prompt": [{"role": "user", "content": "What colour is the kitchen jar?"}],
             "chosen": [{"role": "assistant", "content": "The jar is blue [1]."}],
             "rejected": [{"role": "assistant", "content": "I don't know."}]}
    passes["n"] = 0
    cand, inc = score_all(bundled_gguf, [("new", new), ("old", old)], PAIRS + [extra], NOTES, n_ctx=512,
                          cache_dir=cache)
    # old pairs: the base pass for KL and `new`; the new pair: base, new and old
    assert passes["n"] == 2 * len(PAIRS) + 3
    assert (cand.reused, inc.reused) == (0, len(PAIRS))
    for mine, theirs in ((cand, plain[0]), (inc, plain[1])):
        assert mine.margins[:len(PAIRS)] == pytest.approx(theirs.margins, abs=1e-6)
        assert mine.perplexity == pytest.approx(theirs.perplexity, rel=1e-6)
    assert cand.kl_to_base > 0.001 and inc.kl_to_base > 0.001

    # the same gate again: nothing left to score
    passes["n"] = 0
    again = score_all(bundled_gguf, [("new", new), ("old", old)], PAIRS + [extra], NOTES, n_ctx=512, cache_dir=cache)
    assert passes["n"] == 0
    assert [figures(s) for s in again] == [figures(cand), figures(inc)]

    # an adapter file that changed (retrained under the same name) is scored again
    random_lora(bundled_gguf, new, seed=3)
    passes["n"] = 0
    score_all(bundled_gguf, [("new", new), ("old", old)], PAIRS, NOTES, n_ctx=512, cache_dir=cache)
    assert passes["n"] == 2 * len(PAIRS)


@pytest.mark.slow
def test_kl_beyond_the_sample_needs_no_base_pass_once_the_incumbent_is_an_adapter(
        bundled_gguf, tmp_path, passes, monkeypatch):
    monkeypatch.setattr(gate, "KL_PAIRS", 1)
    old = random_lora(bundled_gguf, tmp_path / "old.gguf", seed=1)
    new = random_lora(bundled_gguf, tmp_path / "new.gguf", seed=2)
    full = score_all(bundled_gguf, [("new", new), ("old", old)], PAIRS[:1], [], n_ctx=512)
    passes["n"] = 0
    cand, inc = score_all(bundled_gguf, [("new", new), ("old", old)], PAIRS, [], n_ctx=512)
    assert passes["n"] == 3 + 2 * (len(PAIRS) - 1)  # the base pass on the first pair only
    assert cand.pairs == inc.pairs == len(PAIRS)
    assert cand.kl_to_base == pytest.approx(full[0].kl_to_base, rel=1e-6)  # KL from the sampled pair
