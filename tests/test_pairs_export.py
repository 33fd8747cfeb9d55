"""`vault-agent pairs export` writes what TRL's DPOTrainer accepts: proven by one real training step."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys

import pytest

from vault_agent.feedback.store import PreferenceLog


def seed_log(path):
    log = PreferenceLog(path)
    msgs = lambda q: [{"role": "system", "content": "Answer from the notes."}, {"role": "user", "content": q}]
    ids = []
    for i, q in enumerate(["How often do I water tomatoes?", "What is Gerald?", "When is the Heron cutover?"]):
        rid = log.record_response(question=q, prompt=q, messages=msgs(q), answer=f"draft answer {i}", retrieved=[],
                                  citations=[], model_id="m", adapter_version=None, timings={})
        ids.append(rid)
    log.correct(ids[0], "Twice a week, 2.5 cm each time [1].")
    log.correct(ids[1], "Gerald is the sourdough starter, fed 1:1:1 [1].")
    other = log.record_response(question="What is Gerald?", prompt="q", messages=msgs("What is Gerald?"),
                                answer="A cat.", retrieved=[], citations=[], model_id="m", adapter_version=None,
                                timings={})
    log.rate(ids[1], 1)
    log.rate(other, -1)
    return log


def test_export_cli_writes_trl_conversational_format(tmp_path, agent_home):
    db = agent_home / "data" / "preferences.sqlite"
    seed_log(db).close()
    out = tmp_path / "pairs.jsonl"
    env = {**os.environ, "VAULT_AGENT_HOME": str(agent_home)}
    run = subprocess.run([sys.executable, "-m", "vault_agent.cli", "pairs", "export", "--out", str(out)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "wrote 3 pairs" in run.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3
    for row in rows:
        assert set(row) == {"prompt", "chosen", "rejected"}
        assert [m["role"] for m in row["prompt"]] == ["system", "user"]
        assert [m["role"] for m in row["chosen"]] == ["assistant"] == [m["role"] for m in row["rejected"]]
    stats = subprocess.run([sys.executable, "-m", "vault_agent.cli", "pairs", "stats", "--json"],
                           capture_output=True, text=True, env=env, timeout=120)
    st = json.loads(stats.stdout)
    assert st["pairs"]["correction"] == 2 and st["pairs"]["rating"] == 1 and st["pairs_untrained"] == 3


@pytest.mark.slow
def test_exported_pairs_train_one_dpo_step(tmp_path, tiny_llama):
    from datasets import load_dataset
    from trl import DPOConfig, DPOTrainer

    log = seed_log(tmp_path / "prefs.sqlite")
    out = tmp_path / "pairs.jsonl"
    assert log.export_pairs_jsonl(out) == 3
    log.close()
    dataset = load_dataset("json", data_files=str(out), split="train")
    model, tokenizer = tiny_llama
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = DPOConfig(
        output_dir=str(tmp_path / "run"), max_steps=1, per_device_train_batch_size=3, learning_rate=1e-2,
        bf16=False, gradient_checkpointing=False, report_to=[], logging_steps=1, save_strategy="no",
        max_length=256, use_cpu=True,
    )
    reference = copy.deepcopy(model)  # without PEFT, DPO needs an explicit frozen reference
    trainer = DPOTrainer(model=model, ref_model=reference, args=args, train_dataset=dataset,
                         processing_class=tokenizer)
    result = trainer.train()
    assert result.global_step == 1
    assert math.isfinite(result.training_loss)
    changed = sum(not (p.detach() == before[n]).all() for n, p in model.named_parameters())
    assert changed > 0  # the step really updated weights
