"""An acknowledged rating is never lost: ratings go through the API of a daemon subprocess that
is killed with SIGKILL mid-stream; after a restart every acknowledged one is there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid

import httpx
import pytest

from conftest import served_url, wait_until
from vault_agent.feedback.store import PreferenceLog

pytestmark = pytest.mark.slow


def start(vault, home):
    """(process, url) of a daemon on a port of its own choosing (port 0)."""
    env = {**os.environ, "VAULT_AGENT_HOME": str(home), "VAULT_AGENT_LLM__N_CTX": "512"}
    proc = subprocess.Popen([sys.executable, "-m", "vault_agent.cli", "serve", "--vault", str(vault),
                             "--port", "0"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = served_url(proc, home)
    except AssertionError:
        proc.kill()
        raise AssertionError(proc.stderr.read().decode()[-2000:]) from None
    assert httpx.get(f"{url}/health", timeout=5).status_code == 200
    return proc, url


def test_sigkill_mid_stream_loses_no_acknowledged_rating(tmp_path, make_vault):
    vault = make_vault({"Note.md": "# Note\n\nA small vault for a durability test.\n"})
    home = tmp_path / "home"
    with PreferenceLog(home / "data" / "preferences.sqlite") as log:  # answers to rate, made up front
        responses = [log.record_response(question=f"q{i}", prompt="p", messages=[], answer=f"a{i}", retrieved=[],
                                         citations=[], model_id="m", adapter_version=None, timings={})
                     for i in range(400)]
    proc, url = start(vault, home)
    token = (home / "state" / "token").read_text().strip()
    acked: list[str] = []
    stop = threading.Event()

    def rate_forever():
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=5) as c:
            for i, rid in enumerate(responses):
                if stop.is_set():
                    return
                try:
                    r = c.post("/feedback", json={"response_id": rid, "rating": 1 if i % 2 else -1,
                                                  "idempotency_key": uuid.uuid4().hex})
                except httpx.TransportError:
                    return  # the daemon died under us: this one was never acknowledged
                if r.status_code == 200:
                    acked.append(r.json()["rating"]["id"])

    writer = threading.Thread(target=rate_forever)
    writer.start()
    wait_until(lambda: len(acked) >= 40 or not writer.is_alive(), timeout=120, interval=0.01,
               what="40 acknowledged ratings")
    os.kill(proc.pid, signal.SIGKILL)  # mid-stream: the writer is still sending
    proc.wait(10)
    stop.set()
    writer.join(10)
    assert 40 <= len(acked) < len(responses)

    proc, url = start(vault, home)
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as c:
            stats = c.get("/preferences/stats").json()
        assert stats["ratings"]["up"] + stats["ratings"]["down"] >= len(acked)
    finally:
        proc.terminate()
        proc.wait(30)
    with PreferenceLog(home / "data" / "preferences.sqlite") as log:
        missing = [rid for rid in acked if log.get_rating(rid) is None]
    assert missing == []
