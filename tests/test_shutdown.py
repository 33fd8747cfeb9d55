"""Shutdown: a running index stops at its next batch and leaves catalog and vectors agreeing; the
daemon stops its threads before freeing what they use, and one failing close skips nothing."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from conftest import served_url, start_daemon, wait_until

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from synthetic_vault import VaultGen  # noqa: E402


def synthetic_vault(root: Path, n: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    VaultGen(seed=7, n=n).write(root)
    return root


def test_stop_during_a_first_index_returns_quickly_and_consistent(tmp_path, open_index, monkeypatch):
    import vault_agent.index.indexer as indexer_mod

    monkeypatch.setattr(indexer_mod, "FIRST_FLUSH_CHUNKS", 100)  # several batches: one is mid-way when we stop
    monkeypatch.setattr(indexer_mod, "FLUSH_CHUNKS", 100)
    vault = synthetic_vault(tmp_path / "vault", 300)
    ix = open_index(vault)
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault("report", ix.reconcile()))
    worker.start()
    wait_until(lambda: ix.catalog.counts()["notes"] > 0, timeout=300, what="the first batch")
    ix.stop()
    asked = time.monotonic()
    worker.join(30)
    assert not worker.is_alive() and time.monotonic() - asked < 10  # one embedding batch, on a busy CPU
    report = result["report"]
    assert report.stopped and 0 < ix.catalog.counts()["notes"] < 300
    assert ix.catalog.all_chunk_ids() == ix.vectors.all_ids()


def test_one_failing_close_does_not_skip_the_rest(make_vault, agent_home, embedder, caplog):
    vault = make_vault({"Note.md": "# Note\n\nA note for the shutdown test.\n"})
    stub = SimpleNamespace(model_id="none (shutdown test)", adapter_version=None, close=lambda: None)
    running = start_daemon(vault, agent_home, embedder, backend=stub, server={"port": 0})
    rt = running.runtime

    def broken_close():
        raise OSError("disk went away")

    rt.log.close = broken_close  # the preference log fails to close...
    with caplog.at_level(logging.ERROR):
        running.stop()
    assert not running.thread.is_alive()
    assert "closing the preference log failed" in caplog.text
    assert not rt.watcher.worker.is_alive()  # ...the watcher was stopped before it...
    from vault_agent.config import load_settings
    from vault_agent.index.indexer import Indexer
    from vault_agent.paths import app_dirs

    ix = Indexer(load_settings(vault=vault), vault.resolve(), app_dirs(), embedder=embedder)  # ...and the index
    ix.close()  # lock released after it: a new writer gets it at once


@pytest.mark.slow  # `serve` loads the real chat model
def test_ctrl_c_during_first_index_of_2000_notes_exits_fast_and_consistent(tmp_path, agent_home):
    vault = synthetic_vault(tmp_path / "vault", 2000)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_AGENT_")}
    env.update({"VAULT_AGENT_HOME": str(agent_home), "PYTHONPATH": str(REPO), "VAULT_AGENT_LLM__N_CTX": "512"})
    proc = subprocess.Popen([sys.executable, "-m", "vault_agent.cli", "serve", "--vault", str(vault), "--port",
                             "0"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = served_url(proc, agent_home, timeout=300)
        deadline = time.monotonic() + 300
        indexed = 0
        while time.monotonic() < deadline and indexed == 0:  # until the first batch is written
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            try:
                token = (agent_home / "state" / "token").read_text().strip()
                st = httpx.get(f"{url}/status", headers={"Authorization": f"Bearer {token}"}, timeout=5).json()
                indexed = st["index"]["notes_indexed"]
            except (OSError, httpx.HTTPError, KeyError, ValueError):
                pass
            time.sleep(0.2)
        assert indexed > 0, "the start-up index wrote nothing in 5 minutes"
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        proc.wait(30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read()
    assert took < 8, f"exit took {took:.1f}s"
    assert "Traceback" not in err, err[-3000:]
    from vault_agent.config import load_settings
    from vault_agent.index.indexer import Indexer
    from vault_agent.paths import app_dirs

    ix = Indexer(load_settings(vault=vault), vault.resolve(), app_dirs(), readonly=True)  # the daemon's own backend
    try:
        notes = ix.catalog.counts()["notes"]
        assert 0 < notes < 2000  # stopped part-way: the test is about an interrupted index
        assert ix.catalog.all_chunk_ids() == ix.vectors.all_ids()
    finally:
        ix.close()
