"""The daemon's side of the plugin's learning view, over real HTTP with the FakeBackend: "Retrain now"
(POST /train/run starts the nightly job, 202; a second start while it runs is a 409 JSON error),
GET /train/status with the run's stage, its result and the pairs waiting by source, and each
version's training plot (GET /adapters/{version}/plot)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

import pytest

from conftest import SAMPLE_VAULT, record_response, start_daemon
from trained_versions import write_version

# The child stands in for `vault-agent retrain --if-due --json`: it names a stage on stderr as the real
# one does, waits until the test lets it go, then prints its JSON result.
CHILD = """
import json, os, sys, time
sys.stderr.write("retrain: fitting the adapter\\n"); sys.stderr.flush()
while not os.path.exists(sys.argv[1]):
    time.sleep(0.05)
print(json.dumps({"version": "v0009", "method": "dpo", "args": sys.argv[2:]}))
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, embedder):
    from vault_agent.llm.fake import FakeBackend

    root = tmp_path_factory.mktemp("learning")
    vault = root / "vault"
    shutil.copytree(SAMPLE_VAULT, vault)
    saved = os.environ.get("VAULT_AGENT_HOME")
    running = start_daemon(vault, root / "home", embedder, FakeBackend(), server={"port": 0})
    yield running
    running.stop()
    if saved is not None:
        os.environ["VAULT_AGENT_HOME"] = saved


def wait_for(check, seconds: float = 30):
    deadline = time.monotonic() + seconds
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return value


def test_retrain_now_runs_the_nightly_job_once_and_reports_its_stage_and_result(daemon, tmp_path):
    go = tmp_path / "go"
    scheduler = daemon.runtime.scheduler
    scheduler.command = [sys.executable, "-c", CHILD, str(go), "--if-due", "--json"]
    try:
        r = daemon.http.post("/train/run")
        assert r.status_code == 202, r.text
        assert r.json()["progress"]["trigger"] == "manual"

        again = daemon.http.post("/train/run")
        assert again.status_code == 409
        assert "already running" in again.json()["error"]

        status = wait_for(lambda: (s := daemon.http.get("/train/status").json())["progress"]
                          and s["progress"]["stage"] == "fitting the adapter" and s)
        assert status["running"] is True and status["progress"]["elapsed_s"] >= 0

        go.touch()
        done = wait_for(lambda: not (s := daemon.http.get("/train/status").json())["running"] and s)
        assert done["progress"] is None
        assert done["last_run"]["returncode"] == 0
        assert done["last_run"]["result"] == {"version": "v0009", "method": "dpo", "args": ["--if-due", "--json"]}

        # force: the same job without --if-due (it trains even with little new feedback)
        go.unlink()
        go.touch()
        assert daemon.http.post("/train/run", json={"force": True}).status_code == 202
        forced = wait_for(lambda: not (s := daemon.http.get("/train/status").json())["running"]
                          and s["last_run"]["result"]["args"] == ["--json"] and s)
        assert forced["last_run"]["returncode"] == 0
    finally:
        wait_for(lambda: not scheduler.running)
        scheduler.command = None


def test_a_bad_retrain_request_is_a_422_not_a_start(daemon):
    r = daemon.http.post("/train/run", json={"force": "sometimes"})
    assert r.status_code == 422 and "error" in r.json()
    assert daemon.http.get("/train/status").json()["running"] is False


def test_status_counts_the_pairs_waiting_to_train_by_source(daemon):
    log = daemon.runtime.log
    before = daemon.http.get("/train/status").json()["waiting"]
    rid = record_response(log, answer="Every day.")
    log.correct(rid, "Twice a week, deeply.")
    after = daemon.http.get("/train/status").json()["waiting"]
    assert after["by_source"]["correction"] == before["by_source"]["correction"] + 1
    assert after["total"] == before["total"] + 1
    assert after["min_new_pairs"] == daemon.runtime.settings.train.min_new_pairs


def test_a_versions_training_plot_is_served_as_png_and_a_missing_one_is_a_404(daemon):
    dirs = daemon.runtime.dirs
    write_version(dirs, "v0001", accuracy=0.75, margin=0.4, kl=0.02)
    r = daemon.http.get("/adapters/v0001/plot")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content[:8] == b"\x89PNG\r\n\x1a\n" and len(r.content) > 5000

    (dirs.data / "adapters" / "v0001" / "training.png").unlink()
    gone = daemon.http.get("/adapters/v0001/plot")
    assert gone.status_code == 404 and "training.png" in gone.json()["error"]
    unknown = daemon.http.get("/adapters/v0404/plot")
    assert unknown.status_code == 404 and "v0404" in unknown.json()["error"]
    assert daemon.http.get("/adapters/..%2F..%2Fetc/plot").status_code == 404
    assert json.loads(daemon.http.get("/adapters").text)["versions"][0]["version"] == "v0001"
