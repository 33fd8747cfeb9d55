"""The Obsidian plugin's own HTTP client and outbox (plugin_bridge/src, bundled for Node) against a
real daemon on loopback: stream an answer with Obsidian's Origin, rate, correct, compare, a wrong
token, and a rating queued while the daemon is down that arrives once it is back. In headless Chromium:
the side view (markdown rendered, no literal marks; which adapter answered) and the learning view
(versions, chart, training curve, a rollback and "Retrain now" clicked), with screenshots of both
under plugin_bridge/test-output/.

Needs node + npm (the plugin's dev dependencies are installed with `npm ci` when missing)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FAST_LLM, SAMPLE_VAULT, start_daemon
from trained_versions import write_version
from vault_agent.llm.fake import FakeBackend

PLUGIN = Path(__file__).resolve().parent.parent / "plugin_bridge"
DRIVER = PLUGIN / "e2e" / "dist" / "run.cjs"
QUESTION = "How often should tomatoes be watered?"

pytestmark = pytest.mark.slow  # the real chat model answers


def _run(cmd: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=PLUGIN, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def plugin_build():
    """The production build (main.js) and the Node driver, from the current sources."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed for the plugin tests (apt-get install nodejs npm)")
    if not (PLUGIN / "node_modules" / ".bin" / "esbuild").exists():
        r = _run(["npm", "ci", "--no-audit", "--no-fund"])
        assert r.returncode == 0, r.stderr[-2000:]
    for script in ("build", "build:e2e"):
        r = _run(["npm", "run", script])
        assert r.returncode == 0, f"npm run {script} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    return PLUGIN


def drive(scenario: str, **config) -> dict:
    r = subprocess.run(["node", str(DRIVER), scenario, json.dumps(config)], capture_output=True, text=True,
                       timeout=600)
    out = json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else {"error": r.stderr[-2000:]}
    assert r.returncode == 0 and "error" not in out, out
    return out


def test_plugin_client_asks_streams_rates_corrects_and_compares(daemon, plugin_build):
    out = drive("flow", url=daemon.url, token=daemon.token, question=QUESTION)

    assert out["connection"]["ok"], out["connection"]
    assert "notes indexed" in out["connection"]["message"]
    assert not out["wrong_token"]["ok"]
    assert "vault-agent token" in out["wrong_token"]["message"]
    assert out["cors_allow_origin"] == "app://obsidian.md"

    answer = out["answer"]
    assert out["tokens"] > 1 and out["streamed_text"].strip()
    assert answer["answer"].strip() == out["streamed_text"].strip()  # what streamed is what was recorded
    assert answer["citations"] and all(c["link"].startswith("[[") and c["uri"].startswith("obsidian://")
                                       for c in answer["citations"])

    # The same key twice (a retry after a lost reply) is one rating.
    assert out["thumb_first"]["rating"]["id"] == out["thumb_again"]["rating"]["id"]
    ratings = daemon.runtime.log.stats()["ratings"]
    assert ratings["up"] == 1
    assert out["correction"]["correction"]["response_id"] == answer["response_id"]

    cid = out["compare"]["id"]
    assert cid in out["pending_before"] and cid not in out["pending_after"]
    assert answer["response_id"] not in out["unrated"]  # rated answers leave the queue
    assert out["adapters"] is None or isinstance(out["adapters"], dict)


def test_a_rating_made_while_the_daemon_is_down_arrives_once_it_is_back(tmp_path, real_embedder, llm_backend,
                                                                        plugin_build):
    vault = tmp_path / "vault"
    shutil.copytree(SAMPLE_VAULT, vault)
    home = tmp_path / "home"
    opts = dict(llm=FAST_LLM, server={"port": 0}, index={"debounce_seconds": 0.2})
    first = start_daemon(vault, home, real_embedder, llm_backend, **opts)
    response_id = first.http.post("/ask", json={"question": QUESTION}).json()["response_id"]
    url, token = first.url, first.token
    first.stop()  # the daemon goes away mid-way

    outbox = tmp_path / "data-outbox.json"  # the plugin keeps its queue in data.json
    down = drive("rate", url=url, token=token, response_id=response_id, outbox_file=str(outbox), key="rating-key-1")
    assert down["sent"] == 0 and down["pending"] == 1
    assert down["blocked"].startswith("DaemonDown") and "vault-agent serve" in down["blocked"]
    assert down["saved_keys"] == ["rating-key-1"]

    second = start_daemon(vault, home, real_embedder, llm_backend, **opts)  # same home: same log and token
    try:
        back = drive("flush", url=second.url, token=token, outbox_file=str(outbox))
        assert back["sent"] == 1 and back["pending"] == 0 and back["saved_keys"] == []
        # A second delivery of the same item (say the reply was lost) changes nothing.
        outbox.write_text(json.dumps([{"key": "rating-key-1", "path": "/feedback", "label": "thumbs down",
                                       "body": {"response_id": response_id, "rating": -1}, "queuedAt": 0}]))
        assert drive("flush", url=second.url, token=token, outbox_file=str(outbox))["sent"] == 1
        stats = second.runtime.log.stats()
        assert stats["ratings"]["down"] == 1 and stats["ratings"]["up"] == 0
    finally:
        second.stop()


def test_plugin_install_copies_the_real_build(tmp_path, plugin_build):
    from vault_agent.plugin_install import install

    vault = tmp_path / "Vault"
    (vault / ".obsidian").mkdir(parents=True)
    dest = install(vault, plugin_build, "http://127.0.0.1:8765", "t")
    assert (dest / "main.js").read_bytes() == (plugin_build / "main.js").read_bytes()
    assert json.loads((dest / "manifest.json").read_text())["id"] == dest.name == "vault-agent"
    assert "VaultAgentPlugin" in (dest / "main.js").read_text() or "vault-agent-ask" in (dest / "main.js").read_text()


CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = PLUGIN / "test-output"  # kept after the run, to look at (git ignores it)


@pytest.fixture
def harness_server():
    """plugin_bridge/ served on a loopback port (the harness page, the bundle, styles.css)."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(PLUGIN))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z]+", text)


def test_the_view_renders_a_streamed_answer_with_citations_and_ratings_in_chromium(
        tmp_path, real_embedder, llm_backend, plugin_build, harness_server):
    from urllib.parse import urlencode

    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is needed for the rendering check (`make test` installs it as root)")
    vault = tmp_path / "vault"
    shutil.copytree(SAMPLE_VAULT, vault)
    # The page's origin stands in for app://obsidian.md, so the daemon grants it CORS the same way.
    running = start_daemon(vault, tmp_path / "home", real_embedder, llm_backend, llm=FAST_LLM,
                           server={"port": 0, "cors_origins": [harness_server]})
    try:
        page = f"{harness_server}/e2e/harness.html?" + urlencode(
            {"url": running.url, "token": running.token, "q": QUESTION})
        r = subprocess.run(["node", "e2e/render-check.mjs", page, str(SCREENSHOTS)], cwd=PLUGIN,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        seen = json.loads(r.stdout.strip().splitlines()[-1])
        assert seen["done"]["ok"], seen
        assert seen["streaming_text"], "no partial answer was on screen while it streamed"
        final = running.runtime.log.get_response(seen["done"]["response_id"])
        # rendered as markdown: the same words, none of the marks
        assert words(seen["answer_text"]) == words(final["answer"])
        assert "**" not in seen["answer_text"]
        assert seen["citations"] and all(seen["citations"])
        assert seen["buttons"][:3] == ["Good answer", "Bad answer", "Write a better answer"]
        assert seen["version_label"] == "answered by the base model"
        assert seen["unlabeled_buttons"] == []
        assert seen["stop_disabled"] is True
        assert seen["delivered"] == [{"response_id": seen["done"]["response_id"], "rating": 1}]
        assert seen["thumb_active"] is True
        assert seen["opened"] == [seen["first_citation_href"]]  # opens that note at that heading
        assert running.runtime.log.stats()["ratings"]["up"] == 1
        assert seen["console_errors"] == []
        assert (SCREENSHOTS / "view-answer.png").stat().st_size > 5000
    finally:
        running.stop()


class MarkdownFake(FakeBackend):
    """The FakeBackend answering in markdown, as chat models do: bold, italics, a list, a marker."""

    def answer_for(self, messages, **kwargs):
        return ["The", " answer", " is:", " **Daily**", " [1].", "\n\n", "- water", " *deeply*", "\n", "- in",
                " loam"]


def chromium_check(script: str, page: str, *extra: str) -> dict:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is needed for the rendering check (`make test` installs it as root)")
    r = subprocess.run(["node", script, page, str(SCREENSHOTS), *extra], cwd=PLUGIN, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_the_view_renders_markdown_and_names_the_adapter_that_answered_in_chromium(
        tmp_path, embedder, plugin_build, harness_server):
    from urllib.parse import urlencode

    vault = tmp_path / "vault"
    shutil.copytree(SAMPLE_VAULT, vault)
    running = start_daemon(vault, tmp_path / "home", embedder, MarkdownFake(token_delay_s=0.05),
                           server={"port": 0, "cors_origins": [harness_server]})
    try:
        for version in ("v0001", "v0002"):
            write_version(running.runtime.dirs, version, accuracy=0.7, margin=0.3, kl=0.02)
        assert running.http.post("/adapters/v0002/activate").json()["active"] == "v0002"
        page = f"{harness_server}/e2e/harness.html?" + urlencode(
            {"url": running.url, "token": running.token, "q": QUESTION})
        seen = chromium_check("e2e/render-check.mjs", page, "markdown-view")
        assert seen["done"]["ok"], seen
        assert "**" not in seen["answer_text"] and "*" not in seen["answer_text"]
        assert seen["answer_strong"] == ["Daily"]
        assert seen["answer_list_items"] == ["water deeply", "in loam"]
        assert seen["markers"] == ["[1]"]
        assert seen["version_label"] == "answered by v0002"
        assert running.runtime.log.get_response(seen["done"]["response_id"])["adapter_version"] == "v0002"
        assert seen["snippets"] and not any("**" in s or s.lstrip().startswith(("#", "- ")) for s in seen["snippets"])
        assert seen["unlabeled_buttons"] == []
        assert seen["console_errors"] == []
        assert (SCREENSHOTS / "markdown-view-answer.png").stat().st_size > 5000
    finally:
        running.stop()


def test_the_learning_view_shows_what_was_learned_and_rolls_back_in_chromium(
        tmp_path, embedder, plugin_build, harness_server):
    from urllib.parse import urlencode

    from conftest import record_response

    vault = tmp_path / "vault"
    shutil.copytree(SAMPLE_VAULT, vault)
    backend = FakeBackend()
    running = start_daemon(vault, tmp_path / "home", embedder, backend,
                           server={"port": 0, "cors_origins": [harness_server]})
    try:
        dirs = running.runtime.dirs
        write_version(dirs, "v0001", accuracy=0.6, margin=0.2, kl=0.01)
        write_version(dirs, "v0002", accuracy=0.75, margin=0.4, kl=0.02)
        write_version(dirs, "v0003", accuracy=0.55, margin=0.1, kl=0.05, promote=False)
        for version in ("v0001", "v0002"):  # v0002 served, v0001 before it
            running.http.post(f"/adapters/{version}/activate").raise_for_status()
        log = running.runtime.log
        log.correct(record_response(log), "Twice a week, deeply.")
        # "Retrain now" starts the nightly job; here a child that finds too little new feedback
        running.runtime.scheduler.command = [
            sys.executable, "-c",
            "import json; print(json.dumps({'version': None, 'due': False, 'reason': '1 new pair, 8 needed'}))"]

        page = f"{harness_server}/e2e/harness.html?" + urlencode(
            {"view": "learning", "url": running.url, "token": running.token})
        seen = chromium_check("e2e/learning-check.mjs", page)

        assert seen["done"]["ok"], seen
        assert seen["waiting"].startswith("1 pair waits to train: 1 correction.")
        assert seen["schedule"].startswith("Next nightly run:")
        assert [row[0].split()[0][:5] for row in seen["rows"]] == ["v0003", "v0002", "v0001"]
        assert "v0002 (active)" in seen["rows"][1][0] and "kept out by the gate" in seen["rows"][0][0]
        assert seen["rows"][1][2:4] == ["75%", "0.020"]  # held-out accuracy, KL to the base
        assert seen["active_before"] == "v0002"
        assert seen["chart_points"] == ["v0001: 60%", "v0002: 75% (active)", "v0003: 55%"]
        assert seen["plot_size"][0] > 300  # training.png, served by GET /adapters/v0002/plot
        assert seen["unlabeled_buttons"] == []

        assert seen["active_after_rollback"] == "v0001"
        assert seen["serving_after_rollback"] == "Serving v0001."
        listing = running.http.get("/adapters").json()
        assert listing["active"] == "v0001" and backend.adapter_version == "v0001"

        assert "Not due: 1 new pair, 8 needed" in seen["last_run_after_retrain"]
        assert seen["console_errors"] == []
        for shot in ("learning-view.png", "learning-view-after.png"):
            assert (SCREENSHOTS / shot).stat().st_size > 5000
    finally:
        running.stop()
