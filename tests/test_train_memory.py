"""A retrain fits the machine it runs on: the memory plan and its refusal, prompts cut to fit
instead of dropped, TRL's LM head scoring answers only on CPU, a run held to its budget, and the
nightly child failing alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from vault_agent.config import TrainSettings
from vault_agent.train import memory
from vault_agent.train.dpo import dims_from_gguf, make_plan
from vault_agent.train.memory import Budget, DoesNotFit, ModelDims


def bundled_dims() -> ModelDims:
    from vault_agent.llm.backend import resolve_model_path

    return dims_from_gguf(resolve_model_path("bundled"))  # GGUF metadata only: nothing is loaded


LLAMA3_8B = ModelDims(params=8_030_261_248, layers=32, hidden=4096, intermediate=14336, vocab=128256, heads=32,
                      kv_heads=8)


def test_default_cpu_plan_for_the_bundled_model_fits_in_4_gib_with_the_batch_unchanged():
    plan = make_plan(TrainSettings(), device="cpu", dims=bundled_dims(), budget=Budget(12.0, "test", 20.0))
    assert plan.memory["total_gib"] <= 4.0, plan.memory
    assert plan.gradient_checkpointing and plan.precompute_ref_log_probs
    d = plan.dpo
    assert d["per_device_train_batch_size"] * d["gradient_accumulation_steps"] == TrainSettings().batch_size
    assert plan.memory["budget_gib"] == 12.0 and plan.memory["seq_len"] == 1024


def test_an_8b_model_on_a_24_gb_gpu_fits_and_a_smaller_card_gets_a_smaller_micro_batch():
    settings = TrainSettings(batch_size=8, max_length=2048)
    big = make_plan(settings, device="cuda", dims=LLAMA3_8B, budget=Budget(22.0, "test", 23.0))
    assert big.memory["total_gib"] <= 22.0 and big.quantization["load_in_4bit"]
    small = make_plan(settings, device="cuda", dims=LLAMA3_8B, budget=Budget(12.0, "test", 12.0))
    assert small.memory["total_gib"] <= 12.0
    assert small.dpo["per_device_train_batch_size"] < big.dpo["per_device_train_batch_size"]
    for plan in (big, small):  # the effective batch never changes
        assert plan.dpo["per_device_train_batch_size"] * plan.dpo["gradient_accumulation_steps"] == 8


def test_nothing_fits_is_one_line_naming_what_to_change():
    with pytest.raises(DoesNotFit) as err:
        make_plan(TrainSettings(), device="cuda", dims=LLAMA3_8B, budget=Budget(3.0, "train.max_memory_gb", 8.0))
    text = str(err.value)
    assert "\n" not in text and "train.max_length" in text and "train.max_memory_gb" in text and "3.0 GiB" in text


def test_budget_is_the_setting_else_60_percent_of_what_is_free(monkeypatch):
    monkeypatch.setattr(memory, "free_gib", lambda device: 10.0)
    default = memory.budget(None, "cpu")
    assert default.gib == 6.0 and "60%" in default.source and default.free_gib == 10.0
    assert memory.budget(3.5, "cpu").gib == 3.5 and memory.budget(3.5, "cpu").source == "train.max_memory_gb"


def test_free_memory_is_read_from_this_machine():
    free = memory.free_gib("cpu")
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / memory.GIB
    assert free is not None and 0 < free <= total


def seed_long_pairs(db, n: int, context_words: int = 900):
    """Synthetic pairs whose RAG prompt is longer than any max_length the tests use."""
    from vault_agent.feedback.store import PreferenceLog
    from vault_agent.llm.prompts import build_rag_messages

    words = ("the garden bed gets water twice a week and compost every second weekend while the station "
             "logs temperature every five minutes").split()
    log = PreferenceLog(db)
    for i in range(n):
        text = " ".join(words[(i + j) % len(words)] for j in range(context_words))
        prompt = build_rag_messages(f"How often is bed {i} watered?",
                                    [{"n": 1, "note": f"Bed {i}.md", "heading": "", "text": text}])
        log.add_synthetic_pair(prompt, f"Bed {i} is watered twice a week [1].", "I don't know.",
                               origin_id=f"chunk{i}:h")
    log.close()


def test_retrain_refuses_before_any_model_loads_when_nothing_fits(agent_home, monkeypatch):
    seed_long_pairs(agent_home / "data" / "preferences.sqlite", 10)
    env = {**os.environ, "VAULT_AGENT_TRAIN__MAX_MEMORY_GB": "0.3", "VAULT_AGENT_TRAIN__MIN_PAIRS": "4"}
    proc = subprocess.run([sys.executable, "-m", "vault_agent.cli", "retrain"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "train.max_length" in lines[0] and "0.3 GiB" in lines[0], proc.stderr
    assert not (agent_home / "data" / "train-base").exists()  # the base was never materialised
    assert not list((agent_home / "data").glob("adapters/v*"))


# --- prompts cut from the left ---------------------------------------------------------------------

def test_a_long_prompt_is_cut_from_the_left_keeping_the_rules_and_the_question(bundled_tokenizer):
    from vault_agent.llm.prompts import build_rag_messages
    from vault_agent.train.truncate import answer_length, fit_prompt, prompt_length

    contexts = [{"n": i, "note": f"N{i}.md", "heading": "", "text": f"Note {i} says: " + "compost and water " * 120}
                for i in range(1, 5)] + [{"n": 5, "note": "N5.md", "heading": "", "text": "Water twice a week."}]
    prompt = build_rag_messages("How often is the garden watered?", contexts)
    answer = "Twice a week [5]."
    assert prompt_length(bundled_tokenizer, prompt) > 1000
    fitted = fit_prompt(bundled_tokenizer, prompt, [answer], 256)
    assert fitted.cut
    p = fitted.prompt
    assert prompt_length(bundled_tokenizer, p) + answer_length(bundled_tokenizer, p, answer) <= 256
    assert p[0] == prompt[0]  # the system rules are whole
    user = p[-1]["content"]
    assert user.startswith("…") and user.endswith("Question: How often is the garden watered?")
    assert "[1] N1" not in user and "[5] N5\nWater twice a week." in user  # the oldest context went first
    assert prompt[1]["content"].startswith("Notes:")  # the caller's prompt is not changed


def test_a_prompt_that_fits_is_left_alone_and_one_with_no_room_is_reported(bundled_tokenizer):
    from vault_agent.train.truncate import fit_prompt

    short = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    fitted = fit_prompt(bundled_tokenizer, short, ["Hello."], 256)
    assert fitted.prompt is short and not fitted.cut
    huge_rules = [{"role": "system", "content": "rule " * 400}, {"role": "user", "content": "Hi?"}]
    assert fit_prompt(bundled_tokenizer, huge_rules, ["Hello."], 128).prompt is None


# --- TRL's LM head scores answers only on CPU --------------------------------------------------------

def test_scoring_only_answer_positions_gives_the_same_log_probs(tiny_llama, monkeypatch):
    import torch
    import trl.trainer.utils as trl_utils
    from trl.trainer.utils import add_fused_lm_head

    from vault_agent.train import cpu_lean

    model, _ = tiny_llama
    add_fused_lm_head(model)
    monkeypatch.setattr(trl_utils, "_use_triton", trl_utils._use_triton)  # restored after the test
    ids = torch.randint(0, 1000, (2, 48))
    labels = ids.masked_fill(torch.arange(48) < 40, -100)
    with torch.no_grad():
        full = model(input_ids=ids, labels=labels, fused_lm_head=True).log_probs
        assert cpu_lean.score_answers_only()
        compact = model(input_ids=ids, labels=labels, fused_lm_head=True).log_probs
    answer = labels[:, 1:] != -100
    assert int(answer.sum()) == 16  # 8 answer tokens a row
    torch.testing.assert_close(compact[answer], full[answer], rtol=1e-5, atol=1e-5)
    assert (compact[answer] < 0).all()


# --- held to the budget; the nightly child fails alone -----------------------------------------------

def test_the_nightly_child_is_niced_and_held_to_its_budget():
    from vault_agent.train.schedule import retrain_command

    cmd = retrain_command(None)
    assert "--limit-memory" in cmd and cmd[cmd.index("--nice") + 1] == "10"


RUNAWAY = """
import os, sys
print(os.nice(0), flush=True)
from vault_agent.train.memory import limit_process
assert limit_process(1.0)
import torch
torch.ones(2 ** 29)  # 2 GiB: past the limit
"""


def test_a_runaway_child_fails_alone_and_status_says_so(api):
    from vault_agent.train.schedule import run_child

    dirs = api.daemon.dirs
    info = run_child(dirs, None, command=[sys.executable, "-c", "import os; os.nice(10)\n" + RUNAWAY])
    assert info["returncode"] == 1
    assert "can't allocate memory" in info["error"] or "MemoryError" in info["error"]
    status = api.http.get("/status").json()  # the daemon still answers, and says what happened
    assert status["training"]["last_run"]["error"] == info["error"]
    assert api.http.get("/health").status_code == 200


def test_a_killed_child_is_named_as_such(agent_home):
    from vault_agent.paths import app_dirs
    from vault_agent.train.schedule import last_run, run_child

    dirs = app_dirs().ensure()
    info = run_child(dirs, None, command=[sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])
    assert info["returncode"] == -9 and "SIGKILL" in info["error"] and "out-of-memory" in info["error"]
    assert last_run(dirs)["error"] == info["error"]


def test_an_allocation_failure_in_training_is_one_line_and_leaves_no_version(agent_home, monkeypatch):
    from vault_agent.paths import app_dirs
    from vault_agent.train import retrain as rt

    seed_long_pairs(agent_home / "data" / "preferences.sqlite", 10)
    monkeypatch.setenv("VAULT_AGENT_TRAIN__MIN_PAIRS", "4")
    monkeypatch.setenv("VAULT_AGENT_TRAIN__MAX_MEMORY_GB", "8")

    def allocation_fails(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 1073741824 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(rt, "train_version", allocation_fails)
    from vault_agent.config import load_settings

    with pytest.raises(rt.OutOfMemory) as err:
        rt.retrain(load_settings(), app_dirs())
    assert "\n" not in str(err.value) and "no version was written" in str(err.value)
    assert "train.max_length" in str(err.value)


# --- a real run against its estimate ------------------------------------------------------------------

@pytest.mark.slow
def test_the_estimate_is_within_30_percent_of_a_real_runs_peak_and_long_prompts_are_cut(agent_home):
    """The bundled model, real ~900-word RAG prompts cut to max_length 512, two optimizer steps in a
    fresh process (its peak RSS is the run's own), held to its budget. (Materialising the GGUF has
    its own, separate estimate: memory.materialise_estimate.)"""
    seed_long_pairs(agent_home / "data" / "preferences.sqlite", 12)
    # the base materialised beforehand, in another process: the run's peak is then its training's
    code = ("from vault_agent.config import load_settings\nfrom vault_agent.paths import app_dirs\n"
            "from vault_agent.train.base import materialise, resolve_base\ns = load_settings()\n"
            "materialise(resolve_base(s.train, s.llm, app_dirs().ensure()))")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=600,
                   env={**os.environ, "HF_HUB_OFFLINE": "1"})
    env = {**os.environ, "VAULT_AGENT_TRAIN__MIN_PAIRS": "4", "VAULT_AGENT_TRAIN__MAX_LENGTH": "512",
           "VAULT_AGENT_TRAIN__BATCH_SIZE": "2", "VAULT_AGENT_TRAIN__EPOCHS": "0.4",
           "VAULT_AGENT_TRAIN__PROMOTE": "false", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "vault_agent.cli", "retrain", "--json", "--limit-memory"],
                          capture_output=True, text=True, env=env, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["version"] == "v0001" and out["steps"] >= 2
    assert out["too_long_left_out"] == 0 and out["prompts_cut"] == out["pairs"]["train"]
    m = out["memory"]
    assert abs(m["estimate_gib"] - m["peak_rss_gib"]) <= 0.3 * m["peak_rss_gib"], m
    assert out["memory_limit_gib"] >= m["budget_gib"]  # held to it, and it did not stop a healthy run
    stages = [line.split(": ", 1)[1] for line in proc.stderr.splitlines() if line.startswith("retrain: ")]
    assert stages[:3] == ["planning for the free memory", "preparing the training base", "training"]


def test_a_runs_peak_is_its_own_not_its_big_parents():
    """Linux carries getrusage's ru_maxrss across fork + exec: a retrain started by pytest or the
    daemon (GiBs resident) reported the parent's peak as its own. The figure must be the child's."""
    child = "from vault_agent.train.memory import peak_rss_gib; print(peak_rss_gib())"
    parent = ("import subprocess, sys\nx = bytearray(1 << 30)\nfor i in range(0, len(x), 4096): x[i] = 1\n"
              f"sys.stdout.write(subprocess.run([sys.executable, '-c', {child!r}], capture_output=True, "
              "text=True, check=True).stdout)")
    out = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, check=True, timeout=120)
    assert 0 < float(out.stdout) < 0.8, out.stdout  # the child imports little; the parent holds 1 GiB
