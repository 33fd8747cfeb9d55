"""The real path: pairs generated from the sample vault by the bundled model, one real retrain of
the bundled model on them, and pair generation through the running daemon."""

from __future__ import annotations

import json
import time

import pytest

from vault_agent.feedback.store import PreferenceLog


@pytest.mark.slow
@pytest.mark.real_embedder
def test_real_pairs_and_retrain_raise_the_heldout_preference(sample_vault_copy, agent_home, open_index, llm_backend,
                                                             monkeypatch):
    from vault_agent.config import load_settings
    from vault_agent.paths import app_dirs
    from vault_agent.train import synthetic
    from vault_agent.train.retrain import retrain

    ix = open_index(sample_vault_copy)
    ix.reconcile()
    dirs = app_dirs().ensure()
    gen = lambda m, n: llm_backend.chat(m, max_tokens=n, temperature=0.2, seed=0)  # noqa: E731
    with PreferenceLog(dirs.preference_db) as log:
        # one context chunk keeps the prompts short: prompt length dominates CPU training cost
        summary = synthetic.generate_pairs(synthetic.catalog_chunks(ix.catalog), log, gen,
                                           synthetic.indexer_retriever(ix, 1), limit=8, context_chunks=1,
                                           answer_tokens=64, fit=synthetic.context_fitter(llm_backend, 64))
        kept = log.pairs()
    assert summary.kept == len(kept) >= 4, summary.to_dict()
    assert summary.chunks_seen == 8 and summary.kept + sum(
        summary.dropped[r] for r in synthetic.PAIR_RULES) == summary.chunks_seen
    assert len({p["origin_id"].split(":")[0] for p in kept}) == len(kept)  # one pair per chunk

    # one pair per step, two epochs: the held-out split (by hash) can leave a single pair to train on,
    # as it does with the pairs the bundled model's Q8_0 copy writes (train 1, held out 3)
    # DPO always: `auto` would pick KTO when the hash split leaves fewer than min_pairs to train on
    for key, value in {"METHOD": "dpo", "MIN_PAIRS": "1", "BATCH_SIZE": "1", "MAX_LENGTH": "384", "LEARNING_RATE": "0.0003",
                       "EPOCHS": "2", "HELDOUT_FRACTION": "0.3"}.items():
        monkeypatch.setenv(f"VAULT_AGENT_TRAIN__{key}", value)
    result = retrain(load_settings(vault=sample_vault_copy), dirs)
    h = result.heldout
    assert result.version == "v0001" and h["pairs"] >= 1 and result.steps >= 2, result
    assert h["margin_after"] > h["margin_before"], h
    assert (dirs.data / "train-base").is_dir()  # the served GGUF, materialised once and cached

    # then the chain: GGUF export, the llama.cpp gate against the (empty) active slot, activation if it won
    from vault_agent.train import active

    gate = result.gate
    vdir = dirs.data / "adapters" / "v0001"
    assert gate["exported"] and (vdir / active.GGUF_NAME).is_file()
    verdict = json.loads((vdir / "gate.json").read_text())
    assert verdict["candidate"]["adapter"] == "v0001" and verdict["active"]["adapter"] is None
    assert verdict["candidate"]["pairs"] >= 1
    assert (active.read_state(dirs)[0].active == "v0001") == gate["promoted"] == verdict["promote"]
    # the answer-level check: the held-out synthetic pairs' questions, answered with and without v0001
    heldout_synthetic = result.heldout["pairs"]
    answers = verdict["answers"]
    # a held-out chunk with no key terms (a list of links, say) makes no question
    assert 1 <= answers["probes"] == answers["candidate"]["questions"] <= heldout_synthetic
    assert 0 <= answers["candidate"]["fact_coverage"] <= 1 and answers["active"]["adapter"] is None
    assert any("unseen questions" in r for r in verdict["reasons"])


@pytest.mark.slow
def test_pairs_generate_through_the_daemon_and_status_shows_the_schedule(daemon):
    started = daemon.http.post("/pairs/generate", json={"limit": 2})
    assert started.status_code == 202, started.text
    deadline = time.monotonic() + 240
    # a user's question is answered while pairs are being generated
    answer = daemon.http.post("/ask", json={"question": "How often do I water the tomatoes?"})
    assert answer.status_code == 200
    while True:
        state = daemon.http.get("/pairs/generate").json()
        if not state["running"]:
            break
        assert time.monotonic() < deadline, state
        time.sleep(0.5)
    assert state["error"] is None and state["summary"]["chunks_seen"] == 2
    stored = [p for p in daemon.runtime.log.pairs() if p["source"] == "synthetic"]
    assert len(stored) == state["summary"]["kept"]
    status = daemon.http.get("/status").json()
    training = status["training"]
    assert training["nightly_at"] == "03:00" and training["next_run"].endswith("03:00")
    assert training["running"] is False and training["versions"] == []
    bad = daemon.http.post("/pairs/generate", json={"limit": 0})
    assert bad.status_code == 422 and "error" in bad.json()
    assert json.loads(json.dumps(state))  # plain JSON all the way
