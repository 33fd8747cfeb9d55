"""`vault-agent retrain` plumbing on the tiny random llama (real TRL, PEFT, tokenizer, SQLite log,
version directories), its bad-input paths, and the training plans."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from vault_agent.feedback.store import PreferenceLog

FACTS = ["Tomatoes need water twice a week.", "Gerald is the sourdough starter.", "The Heron cutover is 14 March.",
         "Compost is turned every two weeks.", "The station logs every five minutes.", "Resting HR fell to 52.",
         "The Overstory is about trees.", "Sleep target is eight hours.", "Basil goes next to tomatoes.",
         "The garden bed is 3 by 1 metres.", "Runs are on Tuesday and Saturday.", "Bread proofs overnight."]


def rag_prompt(i: int, fact: str) -> list[dict]:
    from vault_agent.llm.prompts import build_rag_messages

    return build_rag_messages(f"What about item {i}?", [{"n": 1, "note": f"N{i}.md", "heading": "", "text": fact}])


def seed_pairs(db: Path, n: int = 12) -> PreferenceLog:
    log = PreferenceLog(db)
    for i, fact in enumerate(FACTS[:n]):
        log.add_synthetic_pair(rag_prompt(i, fact), f"{fact} [1]", "I don't know.", origin_id=f"chunk{i}:h")
    # one user correction too: it must count under its own source
    rid = log.record_response(question="What is Gerald?", prompt="p", messages=rag_prompt(99, FACTS[1]),
                              answer="A cat.", retrieved=[], citations=[], model_id="m", adapter_version=None,
                              timings={})
    log.correct(rid, "Gerald is the sourdough starter [1].")
    return log


@pytest.fixture
def tiny_base(tmp_path, tiny_llama, monkeypatch):
    """The tiny random llama saved as an HF checkpoint and configured as train.base_model."""
    model, tokenizer = tiny_llama
    path = tmp_path / "tiny-base"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    for key, value in {"BASE_MODEL": str(path), "MIN_PAIRS": "4", "BATCH_SIZE": "4", "MAX_LENGTH": "128",
                       "LEARNING_RATE": "0.01", "EPOCHS": "1", "PROMOTE": "false"}.items():
        monkeypatch.setenv(f"VAULT_AGENT_TRAIN__{key}", value)
    return path


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vault_agent.cli", *args], capture_output=True, text=True,
                          env=dict(os.environ), timeout=timeout)


def dirs():
    from vault_agent.paths import app_dirs

    return app_dirs().ensure()


def adapter_entries(home: Path) -> list[str]:
    root = home / "data" / "adapters"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


@pytest.mark.slow
def test_retrain_cli_writes_a_complete_version_and_marks_only_its_pairs(agent_home, tiny_base):
    seed_pairs(agent_home / "data" / "preferences.sqlite").close()
    run = cli("retrain", "--json")
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["version"] == "v0001"
    assert out["pairs"]["train"] + out["pairs"]["heldout"] == 13
    assert out["pairs"]["by_source"]["correction"] + out["pairs"]["by_source"]["synthetic"] == out["pairs"]["train"]
    assert set(out["heldout"]) >= {"accuracy_before", "accuracy_after", "margin_before", "margin_after"}
    assert out["heldout"]["pairs"] == out["pairs"]["heldout"] >= 1
    assert out["seconds"] > 0
    version = agent_home / "data" / "adapters" / "v0001"
    assert (version / "adapter" / "adapter_model.safetensors").is_file()
    assert (version / "adapter" / "adapter_config.json").is_file()
    metrics = json.loads((version / "metrics.json").read_text())
    assert metrics["steps"] >= 1 and metrics["loss_first"] is not None
    assert (version / "training.png").is_file() and "plot" not in metrics  # matplotlib is a dependency
    pairs = json.loads((version / "pairs.json").read_text())
    config = json.loads((version / "config.json").read_text())
    assert config["plan"]["bf16"] is False and config["plan"]["gradient_checkpointing"] is True
    assert config["plan"]["quantization"] is None and config["train"]["base_model"] == str(tiny_base)
    assert "training" in (version / "train.log").read_text()
    assert adapter_entries(agent_home) == ["v0001"]  # no temp directory left behind
    with PreferenceLog(agent_home / "data" / "preferences.sqlite") as log:
        marked = {p["id"]: p["trained_in_version"] for p in log.pairs()}
    assert {i for i, v in marked.items() if v == "v0001"} == set(pairs["train"])
    assert all(marked[i] is None for i in pairs["heldout"])  # held-out pairs never train

    # the same held-out pairs next time, and a new version number
    again = cli("retrain", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["version"] == "v0002"
    assert json.loads((agent_home / "data/adapters/v0002/pairs.json").read_text())["heldout"] == pairs["heldout"]


def test_empty_log_stops_with_a_clear_message_and_no_version(agent_home):
    run = cli("retrain")
    assert run.returncode == 2
    assert "only 0 training pairs" in run.stderr and "pairs generate" in run.stderr
    assert "Traceback" not in run.stderr
    assert adapter_entries(agent_home) == []


def test_tiny_log_stops_below_min_pairs(agent_home, monkeypatch):
    monkeypatch.setenv("VAULT_AGENT_TRAIN__MIN_PAIRS", "50")
    seed_pairs(agent_home / "data" / "preferences.sqlite", n=3).close()
    run = cli("retrain", "--json")
    assert run.returncode == 2 and "train.min_pairs is 50" in run.stderr
    assert adapter_entries(agent_home) == []


def test_if_due_does_nothing_without_enough_new_pairs(agent_home, monkeypatch):
    monkeypatch.setenv("VAULT_AGENT_TRAIN__MIN_NEW_PAIRS", "100")
    seed_pairs(agent_home / "data" / "preferences.sqlite").close()
    run = cli("retrain", "--if-due", "--json")
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["due"] is False and out["version"] is None and "min_new_pairs" in out["reason"]


def test_corrupt_pair_row_is_skipped_and_reported_in_the_dry_run(agent_home, tiny_base):
    db = agent_home / "data" / "preferences.sqlite"
    seed_pairs(db).close()
    with sqlite3.connect(db) as conn:  # what a damaged row looks like: unparseable prompt JSON
        conn.execute("INSERT INTO pairs (id, prompt_json, chosen, rejected, source, origin_id, created) "
                     "VALUES ('p_bad', '{not json', 'a', 'b', 'synthetic', 'x', '2026-01-01')")
    run = cli("retrain", "--dry-run", "--json")
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["dry_run"] is True and out["version"] is None
    assert out["pairs"]["corrupt_skipped"] == 1 and out["corrupt_pairs"][0].startswith("p_bad:")
    assert out["pairs"]["train"] + out["pairs"]["heldout"] == 13  # the good ones are all still there
    assert out["plan"]["device"] == "cpu" and out["plan"]["base"]["location"] == str(tiny_base)
    assert out["plan"]["memory"]["total_gib"] > 0
    text = cli("retrain", "--dry-run")
    assert text.returncode == 0 and "skipped pair p_bad" in text.stdout and "memory estimate" in text.stdout
    assert "nothing was trained" in text.stdout
    assert adapter_entries(agent_home) == []


def test_second_retrain_refuses_while_one_holds_the_lock(agent_home, tiny_base):
    from vault_agent.train.schedule import TrainingLock

    seed_pairs(agent_home / "data" / "preferences.sqlite").close()
    with TrainingLock(dirs()):  # the first run (this process) holds the training lock
        run = cli("retrain", "--json")
    assert run.returncode == 2
    assert f"another retrain is already running (pid {os.getpid()}" in run.stderr
    assert adapter_entries(agent_home) == []


def _run_in_process(callback, **over):
    from vault_agent.config import load_settings
    from vault_agent.train.retrain import retrain

    return retrain(load_settings(), dirs(), device="cpu", callbacks=[callback], trainer_overrides=over)


def _untrained(home: Path) -> int:
    with PreferenceLog(home / "data" / "preferences.sqlite") as log:
        return log.stats()["pairs_untrained"]


@pytest.mark.slow
def test_nan_loss_leaves_no_version_and_no_trained_marks(agent_home, tiny_base):
    import torch
    from transformers import TrainerCallback

    from vault_agent.train.fit import TrainingFailed

    class PoisonWeights(TrainerCallback):
        """Turns the LoRA weights into NaN after the first step: the next loss is a real NaN."""

        def on_step_end(self, args, state, control, model=None, **kw):
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if "lora_" in name:
                        p.fill_(float("nan"))

    seed_pairs(agent_home / "data" / "preferences.sqlite").close()
    with pytest.raises(TrainingFailed, match="diverged"):
        _run_in_process(PoisonWeights(), max_steps=2)
    assert adapter_entries(agent_home) == []
    assert _untrained(agent_home) == 13


@pytest.mark.slow
def test_interrupt_leaves_no_version(agent_home, tiny_base):
    from transformers import TrainerCallback

    class CtrlC(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            raise KeyboardInterrupt

    seed_pairs(agent_home / "data" / "preferences.sqlite").close()
    with pytest.raises(KeyboardInterrupt):
        _run_in_process(CtrlC(), max_steps=2)
    assert adapter_entries(agent_home) == []
    assert _untrained(agent_home) == 13
    # the lock died with the run: the next one goes ahead
    from vault_agent.train.schedule import is_locked

    assert not is_locked(dirs())


def test_cuda_plan_configuration_without_a_gpu():
    """No GPU here: checks what the CUDA path WOULD load (nf4, bf16 compute, checkpointing, paged
    8-bit AdamW, reference log-probs once) and that a 7B model with 512-token pairs fits 24 GB."""
    from transformers import LlamaConfig

    from vault_agent.config import TrainSettings
    from vault_agent.train.dpo import ModelDims, bnb_config, dpo_config_kwargs, lora_config, make_plan

    dims = ModelDims.from_config(LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                             num_attention_heads=32, vocab_size=32000))
    assert 6.5e9 < dims.params < 7e9
    plan = make_plan(TrainSettings(), device="cuda", dims=dims, seq_len=512)
    assert plan.quantization == {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
                                 "bnb_4bit_use_double_quant": True, "bnb_4bit_compute_dtype": "bfloat16"}
    assert plan.bf16 and plan.gradient_checkpointing and plan.precompute_ref_log_probs
    assert plan.optim == "paged_adamw_8bit" and plan.dtype == "bfloat16"
    assert plan.dpo["per_device_train_batch_size"] * plan.dpo["gradient_accumulation_steps"] >= 4
    assert 3 < plan.memory["weights_gib"] < 6 and plan.memory["total_gib"] < 24
    q = bnb_config(plan)
    import torch

    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_compute_dtype == torch.bfloat16
    assert lora_config(plan).r == 16
    args = dpo_config_kwargs(plan, "/tmp/unused")  # DPOConfig itself refuses bf16 without a GPU
    assert args["bf16"] and args["gradient_checkpointing"] and args["precompute_ref_log_probs"]
    assert args["optim"] == "paged_adamw_8bit" and args["use_cpu"] is False
    # no budget given: the fastest layout, the whole batch at once
    assert args["per_device_train_batch_size"] == 4 and args["gradient_accumulation_steps"] == 1


def test_cpu_plan_is_fp32_lora_one_pair_at_a_time_with_checkpointing():
    """On CPU: fp32 (no native bf16), one pair per micro-batch with the batch accumulated, gradient
    checkpointing and the reference pass once before training (tests/test_train_memory.py: why)."""
    from vault_agent.config import TrainSettings
    from vault_agent.train.dpo import dpo_config, make_plan

    plan = make_plan(TrainSettings(), device="cpu")
    assert plan.quantization is None and plan.dtype == "float32"
    assert not plan.bf16 and plan.gradient_checkpointing and plan.optim == "adamw_torch"
    args = dpo_config(plan, "/tmp/unused")
    assert args.bf16 is False and args.gradient_checkpointing is True and args.use_cpu
    assert args.precompute_ref_log_probs is True
    assert args.per_device_train_batch_size == 1 and args.gradient_accumulation_steps == 4


def test_dataset_weights_dedups_and_keeps_heldout_stable():
    from vault_agent.config import TrainSettings
    from vault_agent.train.dataset import Pair, build

    settings = TrainSettings(heldout_fraction=0.25)
    prompt = [{"role": "user", "content": "q"}]
    pairs = [Pair(f"p{i}", "synthetic", prompt, f"good {i}", "bad") for i in range(40)]
    pairs.append(Pair("u1", "correction", prompt, "good  0", "bad"))  # same content as p0 (whitespace aside)
    ts = build(pairs, settings)
    assert ts.duplicates == 1
    ids = {p.id for p in ts.train + ts.heldout}
    assert "u1" in ids and "p0" not in ids  # the user's copy wins
    assert 4 <= len(ts.heldout) <= 18
    records = ts.train_records()
    if "u1" in {p.id for p in ts.train}:
        assert sum(r["chosen"][0]["content"] == "good  0" for r in records) == 3  # correction weight 3
    more = build(pairs + [Pair(f"n{i}", "synthetic", prompt, f"new {i}", "bad") for i in range(20)], settings)
    assert {p.id for p in ts.heldout} <= {p.id for p in more.heldout}  # old held-out pairs stay held out
