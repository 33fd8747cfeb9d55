"""KL to the base: the gate measures how far an adapter moved llama.cpp's whole next-token
distribution on the held-out answers, and `adapters list` / GET /adapters show it beside the
A/B win rate the user's comparisons give each version."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import strong_adapter
from test_gate import NOTES, PAIRS

from vault_agent.train import active, registry
from vault_agent.train.gate import Rules, Scores, completion_text, decide, score_all, write_verdict
from vault_agent.train.llama_scorer import LlamaScorer


def _zero_adapter(hf_base, out_dir):
    """PEFT's own initialisation (lora_B = 0): an adapter that leaves the base exactly as it is."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(hf_base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                               lora_dropout=0.0))
    model.save_pretrained(str(out_dir))
    model.unload()


def _kl_by_hand(gguf, adapter, pair, n_ctx=512) -> tuple[float, int]:
    """Summed KL(adapter || base) over the pair's answer positions, from two separate llama.cpp
    contexts (one built with the adapter, one without): no switching involved."""
    rows = {}
    for name, path in (("base", None), ("adapter", adapter)):
        with LlamaScorer(gguf, path, n_ctx=n_ctx) as scorer:
            rows[name] = [scorer.log_probs(*scorer.answer_tokens(pair["prompt"], completion_text(pair[side])))
                          for side in ("chosen", "rejected")]
    total = sum(float((np.exp(a) * (a - b)).sum()) for a, b in zip(rows["adapter"], rows["base"]))
    return total, sum(len(b) for b in rows["base"])


@pytest.fixture(scope="module")
def kl_adapters(hf_base, bundled_gguf, tmp_path_factory):
    from vault_agent.train.export import export_gguf_lora

    root = tmp_path_factory.mktemp("kl")
    _zero_adapter(hf_base, root / "zero")
    strong_adapter(hf_base, root / "strong", ["q_proj", "k_proj", "v_proj", "o_proj"], scale=0.05).unload()
    for name in ("zero", "strong"):
        export_gguf_lora(root / name, bundled_gguf, root / f"{name}.gguf")
    return {"zero": root / "zero.gguf", "strong": root / "strong.gguf"}


@pytest.mark.slow
def test_kl_is_zero_for_the_base_and_clearly_positive_for_a_strong_adapter(bundled_gguf, kl_adapters):
    base, same, strong = score_all(bundled_gguf, [(None, None), ("v0001", kl_adapters["zero"]),
                                                  ("v0002", kl_adapters["strong"])], PAIRS, NOTES, n_ctx=512)
    assert base.kl_to_base == 0.0
    # a LoRA with B = 0 is the base through the real adapter path: switching it on changes nothing
    assert 0.0 <= same.kl_to_base < 1e-4, same.kl_to_base
    assert same.accuracy == base.accuracy and abs(same.margin - base.margin) < 1e-3
    assert strong.kl_to_base > 0.05, strong.kl_to_base
    assert strong.kl_to_base > 1000 * max(same.kl_to_base, 1e-7)

    # the prompt is evaluated once per pair and both answers continue from its cache: the same
    # figures as evaluating each answer in one pass from scratch
    with LlamaScorer(bundled_gguf, None, n_ctx=512) as scorer:
        one_pass = [scorer.completion_logprob(p["prompt"], completion_text(p["chosen"]))
                    - scorer.completion_logprob(p["prompt"], completion_text(p["rejected"])) for p in PAIRS]
    assert base.margin == pytest.approx(sum(one_pass) / len(one_pass), abs=1e-3)

    # switching the adapter on and off in one context gives what two separate contexts give
    total, positions = _kl_by_hand(bundled_gguf, kl_adapters["strong"], PAIRS[0])
    (one,) = score_all(bundled_gguf, [("v0002", kl_adapters["strong"])], PAIRS[:1], [], n_ctx=512)
    assert one.kl_to_base == pytest.approx(total / positions, rel=1e-3, abs=1e-5)
    # the same answers given as single completions (a KTO version's held-out answers): same KL, no pairs
    singles = [{"prompt": PAIRS[0]["prompt"], "completion": PAIRS[0][side], "label": side == "chosen"}
               for side in ("chosen", "rejected")]
    (alone,) = score_all(bundled_gguf, [("v0002", kl_adapters["strong"])], [], [], n_ctx=512, answers=singles)
    assert alone.pairs == 0 and alone.kl_to_base == pytest.approx(one.kl_to_base, rel=1e-6)


@pytest.mark.slow
def test_gate_json_carries_kl_and_adapters_list_shows_it_with_the_ab_win_rate(bundled_gguf, kl_adapters,
                                                                              agent_home):
    from vault_agent.feedback.store import PreferenceLog
    from vault_agent.paths import app_dirs

    dirs = app_dirs().ensure()
    for version, name in (("v0001", "zero"), ("v0002", "strong")):
        vdir = registry.adapters_dir(dirs) / version
        vdir.mkdir(parents=True)
        (vdir / active.GGUF_NAME).write_bytes(kl_adapters[name].read_bytes())
    candidate, incumbent = score_all(bundled_gguf, [("v0002", kl_adapters["strong"]), ("v0001", kl_adapters["zero"])],
                                     PAIRS, NOTES, n_ctx=512)
    verdict = decide(candidate, incumbent, Rules(max_perplexity_rise_pct=1000))
    assert any(r.startswith(f"KL to the base on held-out answers {candidate.kl_to_base:.4f}") for r in verdict.reasons)
    saved = json.loads(write_verdict(registry.adapters_dir(dirs) / "v0002", verdict).read_text())
    assert saved["candidate"]["kl_to_base"] == candidate.kl_to_base and saved["max_kl_to_base"] == 0.0
    assert saved["active"]["kl_to_base"] < 1e-4

    def run_list(*extra):
        r = subprocess.run([sys.executable, "-m", "vault_agent.cli", "adapters", "list", *extra],
                           capture_output=True, text=True, env=dict(os.environ), timeout=120)
        assert r.returncode == 0, r.stderr
        return r.stdout

    rows = {row["version"]: row for row in json.loads(run_list("--json"))["versions"]}
    assert rows["v0002"]["gate"]["kl_to_base"] == candidate.kl_to_base
    assert rows["v0002"]["ab"] is None  # not judged yet: no win rate to show
    assert f"KL to base {candidate.kl_to_base:.4f}" in run_list()
    assert "A/B win rate" not in run_list()

    # the user judges v0002 against v0001 three times (2 wins, 1 tie) through the real log
    with PreferenceLog(dirs.preference_db) as log:
        for choice in ("A", "A", "tie"):
            ids = [log.record_response(question="Q?", prompt="Q?", messages=[{"role": "user", "content": "Q?"}],
                                       answer=f"answer of {v}", retrieved=[], citations=[], model_id="m",
                                       adapter_version=v, timings={}, source="compare") for v in ("v0002", "v0001")]
            log.choose(log.create_comparison("Q?", "Q?", ids[0], ids[1])["id"], choice)
    rows = {row["version"]: row for row in json.loads(run_list("--json"))["versions"]}
    assert rows["v0002"]["ab"]["win_rate"] == pytest.approx(5 / 6, abs=1e-3)
    assert rows["v0001"]["ab"]["lost"] == 2
    text = run_list()
    assert "A/B win rate 0.83 (2 won, 0 lost, 1 tied)" in text and "A/B win rate 0.17 (0 won, 2 lost, 1 tied)" in text


def test_the_kl_guard_refuses_only_when_set():
    active_scores = Scores.from_margins(None, [0.1, -0.1] * 5, perplexity=20.0, kl_to_base=0.0)
    drifted = Scores.from_margins("v0001", [0.6, 0.4] * 5, perplexity=20.5, kl_to_base=0.30)
    assert decide(drifted, active_scores).promote  # 0: reported only
    assert any("KL to the base on held-out answers 0.3000 nats/token, active 0.0000 (no limit set)" == r
               for r in decide(drifted, active_scores).reasons)
    refused = decide(drifted, active_scores, Rules(max_kl_to_base=0.2))
    assert not refused.promote and any("limit 0.2" in r for r in refused.reasons)
    assert decide(drifted, active_scores, Rules(max_kl_to_base=0.5)).promote
    assert not any("KL" in r for r in decide(Scores.from_margins("v0001", [0.6, 0.4] * 5),
                                             active_scores).reasons)  # an old Scores without KL: no line


def test_adapters_api_shows_kl_and_win_rate_as_the_schema_documents(api, tmp_path):
    """Through the daemon (fake model, real preference log): versions with a gate.json, comparisons
    judged over /compare; GET /adapters carries both figures and validates against /openapi.json."""
    import shutil

    from jsonschema import Draft202012Validator

    dirs, http = api.daemon.dirs, api.http
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"GGUF")  # the fake backend only checks the file exists
    # versions of their own: the daemon and its log are shared with test_adapters.py's comparisons
    try:
        for version, kl in (("v0011", 0.01), ("v0012", 0.2)):
            vdir = registry.adapters_dir(dirs) / version
            vdir.mkdir(parents=True)
            (vdir / active.GGUF_NAME).write_bytes(fake.read_bytes())
            write_verdict(vdir, decide(Scores.from_margins(version, [0.3, 0.2, 0.1, -0.1] * 2, perplexity=9.0,
                                                           kl_to_base=kl),
                                       Scores.from_margins(None, [0.1, 0.0, -0.1, -0.2] * 2)))
        listed = http.get("/adapters").json()
        assert [r["gate"]["kl_to_base"] for r in listed["versions"]] == [0.01, 0.2]
        assert all(r["ab"] is None for r in listed["versions"])
        http.post("/adapters/v0011/activate").raise_for_status()
        http.post("/adapters/v0012/activate").raise_for_status()
        for i in range(2):  # v0012 wins both
            pair = http.post("/compare", json={"question": f"What is Project Heron? ({i})"}).json()
            pick = "A" if pair["a"]["adapter_version"] == "v0012" else "B"
            http.post(f"/compare/{pair['comparison_id']}/choice", json={"choice": pick}).raise_for_status()
        r = http.get("/adapters")
        rows = {row["version"]: row for row in r.json()["versions"]}
        assert rows["v0012"]["ab"]["won"] == 2 and rows["v0012"]["ab"]["win_rate"] == 1.0
        assert rows["v0011"]["ab"]["lost"] == 2 and rows["v0011"]["ab"]["win_rate"] == 0.0

        spec = http.get("/openapi.json").json()
        body = spec["paths"]["/adapters"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        validator = Draft202012Validator({**body, "components": spec["components"]})
        assert not list(validator.iter_errors(r.json()))
        version_schema = spec["components"]["schemas"]["AdapterVersion"]["properties"]
        assert "ab" in version_schema and "kl_to_base" in spec["components"]["schemas"]["GateFigures"]["properties"]
        bad = {**r.json(), "versions": [{**rows["v0012"], "ab": {"version": "v0012"}}]}
        assert list(validator.iter_errors(bad))  # the schema really describes the win-rate record
    finally:
        http.post("/adapters/off")
        shutil.rmtree(registry.adapters_dir(dirs), ignore_errors=True)  # the daemon is shared
