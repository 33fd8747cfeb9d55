"""KTO on single thumbs: examples read from a real SQLite log, the auto/dpo/kto choice, refused settings,
--if-due counting thumbs, the gate's judgement of held-out answers, and real KTO retrains."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import record_response
from test_train import adapter_entries, cli, dirs, seed_pairs, tiny_base  # noqa: F401 (tiny_base is a fixture)
from vault_agent.feedback.store import PreferenceLog

ANSWERS = [("Tomatoes need water twice a week.", 1), ("I don't know.", -1), ("Gerald is the starter.", 1),
           ("No idea, sorry.", -1), ("Compost: every two weeks.", 1), ("Bread proofs overnight.", 1),
           ("Can't say.", -1), ("Runs are on Tuesday.", 1), ("Basil goes by tomatoes.", 1), ("Unknown.", -1)]


def thumbs_only_log(db: Path, answers=ANSWERS) -> list[str]:
    """Each answer to its own question, one thumb each: no two thumbs share a question, so no pairs."""
    with PreferenceLog(db) as log:
        ids = []
        for i, (answer, value) in enumerate(answers):
            rid = record_response(log, question=f"Question {i}?", answer=answer)
            ids.append(log.rate(rid, value)["id"])
        assert log.pairs() == []
    return ids


def settings_for(**over):
    from vault_agent.config import TrainSettings

    return TrainSettings(**over)


# --- the examples -------------------------------------------------------------------------------

def test_examples_from_a_real_log_ignore_undone_keep_the_latest_and_count_a_paired_thumb_once(agent_home):
    from vault_agent.train import examples as ex

    db = agent_home / "data" / "preferences.sqlite"
    with PreferenceLog(db) as log:
        undone = record_response(log, "Undone?", "An answer the user took back.")
        log.undo_rating(log.rate(undone, 1)["id"])
        changed = record_response(log, "Changed?", "First liked, then not.")
        log.rate(changed, 1)
        latest = log.rate(changed, -1)["id"]  # the user changed their mind: the thumbs-down is live
        up = record_response(log, "Paired?", "The good answer.")
        down = record_response(log, "paired?", "The bad answer.")  # same question (normalised)
        log.rate(up, 1)
        log.rate(down, -1)
        fixed = record_response(log, "Corrected?", "A wrong answer.")
        log.correct(fixed, "The right answer.")
        broken = record_response(log, "Broken?", "An answer whose prompt was damaged.")
        broken_rating = log.rate(broken, 1)["id"]
        legacy = record_response(log, "Legacy?", "Two live thumbs from an old version.")
    with sqlite3.connect(db) as conn:  # what a damaged row and a pre-one-live-thumb log look like
        conn.execute("UPDATE responses SET messages_json = 'not json' WHERE id = ?", (broken,))
        conn.execute("INSERT INTO ratings (id, response_id, value, created) VALUES "
                     "('rt_old', ?, -1, '2020-01-01T00:00:00.000000+00:00'), "
                     "('rt_new', ?, 1, '2021-01-01T00:00:00.000000+00:00')", (legacy, legacy))

    es = ex.load(db, settings_for(heldout_fraction=0.0))
    got = sorted((e.completion, e.label, e.source) for e in es.train)
    assert got == sorted([
        ("First liked, then not.", False, "thumb"),
        ("The good answer.", True, "rating"), ("The bad answer.", False, "rating"),  # the pair, split; thumbs once
        ("The right answer.", True, "correction"), ("A wrong answer.", False, "correction"),
        ("Two live thumbs from an old version.", True, "thumb"),  # the latest thumb wins
    ])
    assert [e.id for e in es.train if e.completion == "First liked, then not."] == [latest]
    assert es.skipped and es.skipped[0].startswith(f"{broken_rating}: messages are not")
    thumb = next(e for e in es.train if e.id == latest)
    assert thumb.prompt == [{"role": "system", "content": "rules"}, {"role": "user", "content": "Changed?"}]
    assert es.summary()["corrupt_skipped"] == 1 and es.summary()["desirable"] == 3


def test_a_thumbed_answer_that_is_also_a_pair_side_trains_once_and_the_split_is_stable(agent_home):
    from vault_agent.train import dataset as ds
    from vault_agent.train import sampling
    from vault_agent.train import examples as ex

    db = agent_home / "data" / "preferences.sqlite"
    with PreferenceLog(db) as log:
        up = record_response(log, "Same?", "Liked answer.")
        for i in range(3):  # one liked answer, three disliked ones: three rating pairs share the chosen side
            log.rate(record_response(log, "Same?", f"Disliked answer {i}."), -1)
        log.rate(up, 1)
        assert len(log.pairs()) == 3
    for i, (answer, value) in enumerate(ANSWERS):
        with PreferenceLog(db) as log:
            log.rate(record_response(log, f"Other {i}?", answer), value)
    train = settings_for(heldout_fraction=0.3)
    es = ex.load(db, train)
    everything = es.train + es.heldout
    assert [e.completion for e in everything].count("Liked answer.") == 1 and es.duplicates == 2
    assert len(everything) == 4 + len(ANSWERS)
    again = ex.load(db, train)
    assert [e.id for e in again.heldout] == [e.id for e in es.heldout] != []
    # both halves of a pair stay on one side: the side DPO's hash of the pair id puts the pair on
    pair_ids = {p.id for p in ds.read_pairs(db)[0]}
    assert {e.group for e in es.heldout} & pair_ids == {i for i in pair_ids if sampling.bucket(i) < 0.3}
    assert not {e.group for e in es.heldout} & {e.group for e in es.train}


def test_kto_weights_keep_the_papers_balance_on_skewed_thumbs():
    from vault_agent.train.examples import kto_weights

    for n_d, n_u in [(10, 2), (2, 10), (5, 5), (3, 7), (1, 40), (7, 3)]:
        w = kto_weights(n_d, n_u)
        ratio = w["desirable_weight"] * n_d / (w["undesirable_weight"] * n_u)
        assert 1 <= ratio <= 4 / 3, (n_d, n_u, w, ratio)
        assert min(w.values()) == 1.0  # only the scarcer side is weighted up
    assert kto_weights(2, 10) == {"desirable_weight": 5.0, "undesirable_weight": 1.0}


def test_kto_config_follows_the_plan_on_cuda_and_cpu_without_a_gpu():
    """No GPU here: what the CUDA path WOULD configure (nf4 plan, bf16, checkpointing, paged 8-bit AdamW),
    and that KTO's batch of 2 (its KL term pairs neighbours) survives a train.batch_size of 1."""
    from vault_agent.train.dpo import make_plan
    from vault_agent.train.kto import kto_config, kto_config_kwargs

    weights = {"desirable_weight": 1.0, "undesirable_weight": 2.5}
    plan = make_plan(settings_for(batch_size=8), device="cuda")
    args = kto_config_kwargs(plan, "/tmp/out", weights)
    assert plan.quantization["bnb_4bit_quant_type"] == "nf4"
    assert args["bf16"] and args["gradient_checkpointing"] and args["optim"] == "paged_adamw_8bit"
    assert args["loss_type"] == "kto" and args["undesirable_weight"] == 2.5
    assert args["per_device_train_batch_size"] * args["gradient_accumulation_steps"] == 8
    cpu = kto_config(make_plan(settings_for(batch_size=1), device="cpu"), "/tmp/out", weights)
    assert cpu.per_device_train_batch_size == 2 and cpu.gradient_accumulation_steps == 1
    assert not cpu.bf16 and cpu.gradient_checkpointing and cpu.optim == "adamw_torch"
    assert cpu.loss_type == "kto" and cpu.train_sampling_strategy == "sequential"


# --- which method ----------------------------------------------------------------------------------

def test_auto_chooses_kto_without_pairs_and_dpo_with_them():
    from vault_agent.train import dataset as ds
    from vault_agent.train import examples as ex
    from vault_agent.train.method import choose

    train = settings_for(min_pairs=4, heldout_fraction=0.0)
    pair = lambda i: ds.Pair(f"p{i}", "synthetic", [{"role": "user", "content": f"q{i}"}], "yes", "no")  # noqa: E731
    thumb = lambda i: ex.Example(f"rt{i}", f"rt{i}", ex.THUMB, [{"role": "user", "content": f"t{i}"}], "a", i % 2 == 0)  # noqa: E731
    thumbs = [thumb(i) for i in range(5)]
    no_pairs = ds.build([], train)
    method, why = choose(train, no_pairs, ex.build([], thumbs, train))
    assert method == "kto" and "only 0 preference pairs" in why and "5 thumbed" in why
    pairs = [pair(i) for i in range(4)]
    method, why = choose(train, ds.build(pairs, train), ex.build(pairs, thumbs, train))
    assert method == "dpo" and "4 preference pairs" in why
    # neither is enough: the message says what each method lacks
    with pytest.raises(ds.NotEnoughPairs, match=r"only 0 training pairs for DPO \(train.min_pairs is 4\), and 1 "
                                                r"single answers .* for KTO \(it needs 4\)"):
        choose(train, no_pairs, ex.build([], thumbs[:1], train))
    forced = settings_for(min_pairs=4, heldout_fraction=0.0, method="dpo")
    with pytest.raises(ds.NotEnoughPairs, match="--method kto"):  # the thumbs would do for KTO: say so
        choose(forced, no_pairs, ex.build([], thumbs, train))


def test_dry_run_summary_names_the_method_and_why(agent_home, tiny_base):
    db = agent_home / "data" / "preferences.sqlite"
    thumbs_only_log(db)
    run = cli("retrain", "--dry-run", "--json")
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["method"] == "kto" and "auto chose KTO" in out["method_reason"]
    k = out["kto"]
    assert k["desirable"] + k["undesirable"] == out["examples"]["weighted_train_rows"]
    assert k["desirable_weight"] * k["desirable"] / (k["undesirable_weight"] * k["undesirable"]) >= 1
    text = cli("retrain", "--dry-run")
    assert "method: KTO (auto chose KTO" in text.stdout and "weights" in text.stdout

    seed_pairs(db).close()
    out = json.loads(cli("retrain", "--dry-run", "--json").stdout)
    assert out["method"] == "dpo" and "auto chose DPO" in out["method_reason"] and "kto" not in out
    forced = json.loads(cli("retrain", "--dry-run", "--json", "--method", "kto").stdout)
    assert forced["method"] == "kto" and forced["method_reason"].startswith("train.method is kto")


# --- refused before any model loads -------------------------------------------------------------

PROBE = """
import json, sys, time
from vault_agent.cli import main
sys.argv = ["vault-agent", *sys.argv[1:]]
started = time.perf_counter()
try:
    main()
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "seconds": time.perf_counter() - started,
                  "heavy": [m for m in ("torch", "transformers", "trl", "peft") if m in sys.modules]}))
"""


def probe(*args: str, **env: str) -> tuple[dict, str]:
    run = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120,
                         env={**os.environ, **env})
    return json.loads(run.stdout.strip().splitlines()[-1]), run.stderr


@pytest.mark.parametrize("args, env, says", [
    (("retrain", "--method", "kto"), {"VAULT_AGENT_TRAIN__SOURCE_MARGINS": '{"correction": 1.0}'},
     "train.source_margins applies to DPO pairs"),
    (("retrain",), {"VAULT_AGENT_TRAIN__METHOD": "kto", "VAULT_AGENT_TRAIN__DYNAMIC_BETA": "true"},
     "train.dynamic_beta is a DPO variant"),
    (("retrain", "--method", "kto"), {"VAULT_AGENT_TRAIN__BETA": "-0.1"}, "train.beta"),
    (("retrain", "--method", "fast"), {}, "--method fast"),
])
def test_bad_settings_are_refused_in_one_line_before_any_model_loads(agent_home, args, env, says):
    thumbs_only_log(agent_home / "data" / "preferences.sqlite")
    out, stderr = probe(*args, **env)
    assert out["code"] == 2 and out["heavy"] == [], out
    assert stderr.startswith("error: ") and says in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert adapter_entries(agent_home) == []


# --- --if-due counts thumbs for KTO -------------------------------------------------------------------

def test_if_due_counts_thumbs_given_after_the_newest_version(agent_home, tiny_base, monkeypatch):
    from vault_agent.feedback.pairs import utcnow
    from vault_agent.train import registry

    monkeypatch.setenv("VAULT_AGENT_TRAIN__MIN_NEW_PAIRS", "5")
    monkeypatch.setenv("VAULT_AGENT_TRAIN__HELDOUT_FRACTION", "0")  # held-out thumbs never train: not counted
    db = agent_home / "data" / "preferences.sqlite"
    thumbs_only_log(db)
    due = json.loads(cli("retrain", "--if-due", "--dry-run", "--json").stdout)
    assert due["method"] == "kto" and due.get("due") is not False and due["dry_run"], due

    # a version trained after those thumbs: none of them is new any more
    version = registry.adapters_dir(dirs()) / "v0001"
    version.mkdir(parents=True)
    registry.write_json(version / "metrics.json", {"version": "v0001", "trained_at": utcnow()})
    out = json.loads(cli("retrain", "--if-due", "--dry-run", "--json").stdout)
    assert out["due"] is False and out["reason"] == "0 new pairs and 0 new thumbs, train.min_new_pairs is 5"

    time.sleep(0.01)
    thumbs_only_log(db, [(f"Fresh answer {i}.", 1 - 2 * (i % 2)) for i in range(5)])
    out = json.loads(cli("retrain", "--if-due", "--dry-run", "--json").stdout)
    assert out.get("due") is not False and out["method"] == "kto", out


def test_if_due_with_too_little_feedback_is_not_due_rather_than_an_error(agent_home, tiny_base):
    run = cli("retrain", "--if-due", "--json")
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["due"] is False and "not enough feedback" in out["reason"]


# --- the gate on held-out answers ---------------------------------------------------------------------

def test_gate_judges_kto_candidates_answer_by_answer():
    from vault_agent.train.gate import Rules, Scores, decide, judge_examples

    import numpy as np

    rows = [{"label": True}, {"label": True}, {"label": False}, {"label": False}]
    active = [-2.0, -1.5, -1.0, -3.0]
    good = judge_examples(rows, [np.float64(-1.5), -1.0, -1.5, None], active)  # the last is too long: skipped
    assert (good.examples, good.right, good.skipped) == (3, 3, 1)
    assert good.desirable_logp_change == pytest.approx(0.5) and good.undesirable_logp_change == pytest.approx(-0.5)
    lenient = Rules(max_perplexity_rise_pct=10.0, min_heldout=3)
    verdict = decide(Scores("v2", perplexity=10.5), Scores("v1", perplexity=10.0), lenient, examples=good)
    assert verdict.promote and "3/3 held-out answers moved the right way" in verdict.reasons[0]
    assert json.loads(json.dumps(verdict.to_dict()))["examples"]["right"] == 3  # gate.json can hold it

    bad = judge_examples(rows, [-2.5, -1.0, -0.5, -2.0], active)  # raises the undesirable answers more
    assert bad.right == 1 and not decide(Scores("v2"), Scores("v1"), lenient, examples=bad).promote
    too_few = decide(Scores("v2"), Scores("v1"), examples=good)  # the default bar: 8 held-out answers
    assert not too_few.promote and any("only 3 held-out answers, 8 needed" in r for r in too_few.reasons)
    worse_ppl = decide(Scores("v2", perplexity=12.0), Scores("v1", perplexity=10.0), lenient, examples=good)
    assert not worse_ppl.promote and "+20.0%" in worse_ppl.reasons[-1]
    nothing = decide(Scores("v2"), Scores("v1"), examples=judge_examples(rows, [None] * 4, active))
    assert not nothing.promote and "no held-out example fits" in nothing.reasons[0]


# --- real KTO retrains ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_kto_on_a_thumbs_only_log_writes_a_version(agent_home, tiny_base, monkeypatch):
    monkeypatch.setenv("VAULT_AGENT_TRAIN__HELDOUT_FRACTION", "0.3")
    db = agent_home / "data" / "preferences.sqlite"
    thumbs_only_log(db)
    run = cli("retrain", "--json")
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["version"] == "v0001" and out["method"] == "kto" and out["steps"] >= 1, out
    version = agent_home / "data" / "adapters" / "v0001"
    assert (version / "adapter" / "adapter_model.safetensors").is_file()
    metrics = json.loads((version / "metrics.json").read_text())
    assert metrics["method"] == "kto" and metrics["kto"]["desirable_weight"] >= 1
    h = metrics["heldout"]
    assert h["examples"] == out["examples"]["heldout"] >= 1
    assert h["desirable_logp_change"] is not None or h["undesirable_logp_change"] is not None
    record = json.loads((version / "pairs.json").read_text())
    assert record["method"] == "kto" and len(record["thumbs"]) == out["examples"]["train"]
    assert adapter_entries(agent_home) == ["v0001"]


@pytest.mark.slow
def test_real_kto_retrain_of_the_served_model_is_gated_on_heldout_answers(agent_home, monkeypatch):
    """The bundled model itself, short prompts, a few steps; then GGUF export and the llama.cpp gate
    judging the held-out thumbs against the (empty) active slot."""
    for key, value in {"MIN_PAIRS": "4", "BATCH_SIZE": "2", "MAX_LENGTH": "96", "LEARNING_RATE": "0.0003",
                       "EPOCHS": "1", "HELDOUT_FRACTION": "0.3"}.items():
        monkeypatch.setenv(f"VAULT_AGENT_TRAIN__{key}", value)
    thumbs_only_log(agent_home / "data" / "preferences.sqlite")
    from vault_agent.config import load_settings
    from vault_agent.train.retrain import retrain

    result = retrain(load_settings(), dirs(), device="cpu", trainer_overrides={"max_steps": 2})
    assert result.method == "kto" and result.version == "v0001", result
    gate = result.gate
    assert gate["exported"], gate
    verdict = json.loads((agent_home / "data/adapters/v0001/gate.json").read_text())
    assert verdict["examples"]["examples"] >= 1 and verdict["candidate"]["pairs"] == 0
    assert "held-out answers" in verdict["reasons"][0]
    # KL to the base is taken over the held-out answers too (no pairs here)
    assert verdict["candidate"]["kl_to_base"] > 0 and verdict["active"]["kl_to_base"] == 0.0
    assert any(r.startswith("KL to the base on held-out answers") for r in verdict["reasons"])
    assert gate["promoted"] == verdict["promote"]
