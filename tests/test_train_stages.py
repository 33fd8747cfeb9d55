"""A retrain stopped at any stage (materialise, train, export, gate), by Ctrl-C or SIGKILL, leaves
no half version in `adapters list`, no pair marked trained and the train lock free; the next
retrain succeeds. The real bundled model, TRL, llama.cpp export and gate, in child processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vault_agent.feedback.store import PreferenceLog

STAGE_LINES = {"materialise": "preparing the training base", "train": "training",
               "export": "exporting the adapter to GGUF", "gate": "gating against the active adapter"}
SETTINGS = {"MIN_PAIRS": "4", "MAX_LENGTH": "128", "BATCH_SIZE": "2", "EPOCHS": "0.3", "PROMOTE": "true"}


def seed(db: Path, n: int = 10) -> None:
    from vault_agent.llm.prompts import build_rag_messages

    log = PreferenceLog(db)
    for i in range(n):
        fact = f"Bed {i} is watered every {i + 2} days."
        log.add_synthetic_pair(build_rag_messages(f"How often is bed {i} watered?",
                                                  [{"n": 1, "note": f"Bed {i}.md", "heading": "", "text": fact}]),
                               f"{fact} [1]", "I don't know.", origin_id=f"chunk{i}:h")
    log.close()


def env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", **{f"VAULT_AGENT_TRAIN__{k}": v for k, v in SETTINGS.items()}}


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vault_agent.cli", *args], capture_output=True, text=True,
                          env=env(), timeout=900)


@pytest.fixture(scope="session")
def materialised_base(tmp_path_factory) -> Path:
    """The bundled GGUF materialised once (about 20 s); tests link it in where materialising is not the stage."""
    home = tmp_path_factory.mktemp("base-home")
    code = ("from vault_agent.config import load_settings\nfrom vault_agent.paths import app_dirs\n"
            "from vault_agent.train.base import materialise, resolve_base\ns = load_settings()\n"
            "print(materialise(resolve_base(s.train, s.llm, app_dirs().ensure())))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "VAULT_AGENT_HOME": str(home), "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    return Path(out.stdout.strip().splitlines()[-1]).parent


def stop_at(stage: str, sig: int) -> tuple[int, str]:
    """Start `retrain --json`, send `sig` as soon as it says the stage began; (exit code, stderr)."""
    # SIG_DFL first: a shell's background job (`make test &`) starts with SIGINT ignored, and an
    # ignored SIGINT is inherited across exec, so Python would never see the Ctrl-C this test sends
    proc = subprocess.Popen([sys.executable, "-m", "vault_agent.cli", "retrain", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = []
    deadline = time.monotonic() + 600
    for line in proc.stderr:  # one line per stage (cli/train.py STAGES)
        seen.append(line.rstrip())
        if line.strip() == f"retrain: {STAGE_LINES[stage]}":
            if stage == "train":
                time.sleep(1.0)  # well inside the stage: the model is loading
            # the gate gets the signal at once: on a fast machine it scores the few held-out
            # pairs and publishes within a second, and a later signal would find a whole version
            proc.send_signal(sig)
            break
        assert time.monotonic() < deadline
    rest = proc.communicate(timeout=300)[1]
    return proc.returncode, "\n".join(seen) + rest


def listed_versions() -> list[str]:
    out = cli("adapters", "list", "--json")
    assert out.returncode == 0, out.stderr
    return [v["version"] for v in json.loads(out.stdout)["versions"]]


def trained_marks(home: Path) -> list:
    with PreferenceLog(home / "data" / "preferences.sqlite") as log:
        return [p["trained_in_version"] for p in log.pairs() if p["trained_in_version"]]


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(STAGE_LINES))
def test_a_retrain_stopped_at_any_stage_leaves_no_half_version_and_the_next_one_succeeds(
        agent_home, materialised_base, stage):
    from vault_agent.paths import app_dirs
    from vault_agent.train.schedule import is_locked

    seed(agent_home / "data" / "preferences.sqlite")
    base_dir = agent_home / "data" / "train-base"
    if stage != "materialise":
        base_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(materialised_base, base_dir, symlinks=True)
    for sig in (signal.SIGINT, signal.SIGKILL):
        code, err = stop_at(stage, sig)
        assert code == (130 if sig == signal.SIGINT else -9), err[-3000:]
        assert listed_versions() == [], f"a half version after {sig!r} at {stage}"
        assert trained_marks(agent_home) == []
        assert not is_locked(app_dirs())
    done = cli("retrain", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["version"] == "v0001" and summary["gate"]["exported"]
    assert listed_versions() == ["v0001"]
    assert len(trained_marks(agent_home)) == summary["pairs"]["train"]
    leftovers = [p.name for p in (agent_home / "data").rglob("*") if ".tmp-" in p.name]
    assert leftovers == [], leftovers  # what the killed runs left was cleaned up
