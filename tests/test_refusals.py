"""Every refusal in one shape, nothing silent, private files private (issue 20): one test per case
the reliability probe found, each reproducing it against a real daemon (uvicorn on loopback, real
index and SQLite; the fake chat backend) or the real CLI in a subprocess."""

from __future__ import annotations

import concurrent.futures
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from conftest import REPO, record_response

OBSIDIAN = "app://obsidian.md"


def plain(daemon, method, path, **kwargs):
    """A request without the token."""
    with httpx.Client(base_url=daemon.url, timeout=60) as c:
        return c.request(method, path, **kwargs)


def raw_http(daemon, request: bytes) -> tuple[int, dict, bytes]:
    """Bytes on the wire, for what httpx won't send (two Host headers, an absolute-form target)."""
    port = int(daemon.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def get_status(daemon, host_lines: str, target: str = "/status") -> tuple[int, dict]:
    status, headers, body = raw_http(daemon, (f"GET {target} HTTP/1.1\r\n{host_lines}Authorization: Bearer "
                                              f"{daemon.token}\r\nConnection: close\r\n\r\n").encode())
    if status == 400 and "json" not in headers.get("content-type", ""):
        # h11 itself refuses a request without exactly one Host header (RFC 9112), before the app
        return status, {"error": f"Host: {body.decode()}"}
    return status, json.loads(body)


def cli(args: list[str], home: Path, timeout: float = 120, **popen) -> subprocess.CompletedProcess:
    env = {**os.environ, "VAULT_AGENT_HOME": str(home), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "vault_agent.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, **popen)


# 1. The framework's own refusals read like ours: {"error": ...}


@pytest.mark.parametrize("body", [b'{"query": "\xff\xfe"}', b"[" * 10000 + b"]" * 10000])
def test_unparseable_body_is_an_error_line(api, body):
    r = api.http.post("/search", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code in (400, 422)
    answer = r.json()
    assert answer["error"] and set(answer) <= {"error", "detail"}  # never FastAPI's bare {"detail": "..."}


def test_unknown_path_and_wrong_method_are_error_lines(api):
    missing = api.http.get("/no/such/thing")
    assert missing.status_code == 404 and "no such endpoint" in missing.json()["error"]
    wrong = api.http.delete("/status")
    assert wrong.status_code == 405 and "DELETE" in wrong.json()["error"] and "GET" in wrong.json()["error"]


def test_openapi_documents_the_framework_errors(api):
    doc = api.http.get("/openapi.json").json()
    answers = doc["paths"]["/status"]["get"]["responses"]
    for code in ("400", "404", "405"):
        assert answers[code]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")


# 2. A read-only data folder: one line, exit 2


def test_serve_with_read_only_data_dir_is_one_line_exit_2(tmp_path, make_vault):
    home = tmp_path / "home"
    vault = make_vault({"Note.md": "# Note\n\ntext\n"})
    data = home / "data"
    data.mkdir(parents=True, mode=0o700)
    args = [sys.executable, "-m", "vault_agent.cli", "serve", "--vault", str(vault), "--port", "0"]
    env = {**os.environ, "VAULT_AGENT_HOME": str(home), "PYTHONPATH": str(REPO)}
    if os.geteuid() == 0:  # root writes through mode bits: make the folder a read-only mount instead
        script = f'mount --bind -o ro "{data}" "{data}" && exec "$@"'
        args = ["unshare", "-m", "sh", "-c", script, "sh", *args]
    else:
        data.chmod(0o500)
    try:
        out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    finally:
        data.chmod(0o700)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(data) in lines[0], out.stderr
    assert "Traceback" not in out.stderr


# 3. pairs generate during the daemon's first index


class SlowEmbedder:
    """The real embedder, held at its first call until released: a first index still running."""

    def __init__(self, embedder):
        self.inner, self.release = embedder, threading.Event()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def embed(self, texts, should_stop=None):
        self.release.wait(120)
        return self.inner.embed(texts, should_stop)


def test_pairs_generate_waits_for_the_first_index_or_refuses(sample_vault_copy, embedder, agent_home):
    from vault_agent.config import load_settings
    from vault_agent.daemon import Daemon
    from vault_agent.llm.fake import FakeBackend
    from vault_agent.paths import app_dirs

    vault = sample_vault_copy.resolve()
    slow = SlowEmbedder(embedder)
    daemon = Daemon(load_settings(vault=vault, server={"port": 0}), vault, app_dirs(), embedder=slow,
                    backend=FakeBackend()).build()
    ready = threading.Event()
    thread = threading.Thread(target=daemon.serve, kwargs={"ready": ready}, daemon=True)
    thread.start()
    try:
        assert ready.wait(60)
        refused = cli(["pairs", "generate", "--no-wait", "--limit", "1"], agent_home)
        assert refused.returncode == 2
        assert refused.stderr.strip().count("\n") == 0 and "first index" in refused.stderr
        waiting = subprocess.Popen(
            [sys.executable, "-m", "vault_agent.cli", "pairs", "generate", "--limit", "1", "--json"],
            env={**os.environ, "VAULT_AGENT_HOME": str(agent_home), "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(3)
        assert waiting.poll() is None  # still waiting, not "0 chunks, nothing to do"
        slow.release.set()
        out, err = waiting.communicate(timeout=120)
        assert waiting.returncode == 0, err
        assert "waiting for the daemon's first index" in err
        assert json.loads(out)["chunks_seen"] >= 1
    finally:
        slow.release.set()
        daemon.stop()
        thread.join(60)


# 4. The schema's rules, no more and no less


@pytest.mark.parametrize("path,body", [
    ("/index", {"full": 0}),
    ("/pairs/generate", {"limit": True}),
    ("/compare", {"question": "tomatoes?", "k": True}),
    ("/search", {"query": "tomatoes", "k": "5"}),
    ("/feedback", {"response_id": "r", "rating": True}),
])
def test_no_coercion_of_wrong_types(api, path, body):
    r = api.http.post(path, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]
    assert not api.runtime.pair_job.snapshot()["running"]


def test_blank_is_in_the_schema_and_the_server_agrees(api):
    import re

    doc = api.http.get("/openapi.json").json()
    question = doc["components"]["schemas"]["AskRequest"]["properties"]["question"]
    assert question["maxLength"] == api.runtime.settings.server.max_question_chars
    for text in ("\u001f", " \t", "\u3000"):  # blank: the pattern refuses it, and so does the server
        assert re.search(question["pattern"], text) is None
        r = api.http.post("/search", json={"query": text})
        assert r.status_code == 422 and r.json()["error"] == "query: must not be blank"
    assert re.search(question["pattern"], "\u001fx")
    assert api.http.post("/search", json={"query": "\u001ftomatoes"}).status_code == 200


def test_allow_names_every_method_of_a_path(api):
    r = api.http.request("OPTIONS", "/pairs/generate")
    assert r.status_code == 405
    assert {m.strip() for m in r.headers["allow"].split(",")} >= {"GET", "POST"}
    assert "error" in r.json()


# 5. The Host guard


@pytest.mark.parametrize("host_lines", [
    "Host: localhost:evil\r\n",
    "Host: localhost:{port}, evil.example\r\n",
    "Host: evil.example\r\nHost: localhost:{port}\r\n",
    "Host: localhost:{port}\r\nHost: localhost:{port}\r\n",
    "Host: localhost:1\r\n",
    "",
])
def test_host_guard_refuses(api, host_lines):
    port = api.url.rsplit(":", 1)[1]
    status, body = get_status(api, host_lines.format(port=port))
    assert status == 400 and "Host" in body["error"]


def test_absolute_form_target_must_name_this_server(api):
    port = api.url.rsplit(":", 1)[1]
    status, body = get_status(api, "Host: localhost\r\n", target="http://evil.example/status")
    assert status == 400 and "evil.example" in body["error"]
    status, body = get_status(api, f"Host: localhost:{port}\r\n", target=f"http://localhost:{port}/status")
    assert status == 200 and "index" in body
    for host in ("localhost", f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        assert get_status(api, f"Host: {host}\r\n")[0] == 200


# 6 and 7. Idempotency keys


def test_key_reused_for_another_response_is_409_and_records_nothing(api):
    log = api.runtime.log
    first, second = record_response(log, "q one?"), record_response(log, "q two?")
    key = {"Idempotency-Key": uuid.uuid4().hex}
    ok = api.http.post("/feedback", json={"response_id": first, "rating": 1}, headers=key)
    assert ok.status_code == 200
    again = api.http.post("/feedback", json={"response_id": first, "rating": 1}, headers=key)
    assert again.json() == ok.json()  # a retry: the first result
    other = api.http.post("/feedback", json={"response_id": second, "rating": -1}, headers=key)
    assert other.status_code == 409 and "different" in other.json()["error"]
    unrated = {r["id"] for r in log.recent_responses(500, unrated=True)}
    assert second in unrated and first not in unrated  # nothing recorded for the refused one
    flipped = api.http.post("/feedback", json={"response_id": first, "rating": -1}, headers=key)
    assert flipped.status_code == 409


def test_parallel_compare_with_one_key_runs_one_generation(api):
    backend = api.backend
    backend.token_delay_s = 0.01
    key = uuid.uuid4().hex
    before = backend.generations
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: api.http.post(
            "/compare", json={"question": "How often do I water tomatoes?", "idempotency_key": key}), range(8)))
    ok = [a for a in answers if a.status_code == 200]
    assert ok and all(a.status_code in (200, 503) for a in answers)
    assert len({a.json()["comparison_id"] for a in ok}) == 1
    assert backend.generations - before <= 2 * 3  # one comparison: two candidates (plus the retry loop's few)
    other = api.http.post("/compare", json={"question": "Something else entirely?", "idempotency_key": key})
    assert other.status_code == 409


# 8. Private files


def test_data_folders_and_stores_are_private(api):
    from vault_agent.paths import app_dirs

    dirs = api.runtime.dirs
    for folder in (dirs.config, dirs.data, dirs.state):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    stores = [dirs.preference_db, dirs.token_file, *api.runtime.indexer.directory.rglob("*")]
    for path in stores:
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
    assert app_dirs  # the module the folders come from


# 9. A read creates nothing


def test_pairs_stats_without_a_log_creates_none(tmp_path):
    home = tmp_path / "fresh-home"
    out = cli(["pairs", "stats", "--json"], home)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["pairs_total"] == 0
    assert not (home / "data" / "preferences.sqlite").exists()


# 10. A granted origin can read every refusal


def test_refusals_to_a_granted_origin_carry_cors_headers(api):
    origin = {"Origin": OBSIDIAN}
    unauthorized = plain(api, "GET", "/status", headers=origin)
    too_large = api.http.post("/ask", json={"question": "x" * 70000}, headers=origin)
    api.runtime.queue.inside = api.runtime.queue.capacity  # a full queue
    try:
        busy = api.http.post("/ask", json={"question": "tomatoes?"}, headers=origin)
    finally:
        api.runtime.queue.inside = 0
    for r, code in ((unauthorized, 401), (too_large, 413), (busy, 503)):
        assert r.status_code == code
        assert r.headers.get("access-control-allow-origin") == OBSIDIAN, code
        assert r.json()["error"]
