"""The guards of a localhost server that any web page on this machine can reach.
Real uvicorn on a loopback port, real models, a temp copy of the sample vault."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.slow


def raw(daemon, method, path, **kwargs):
    with httpx.Client(base_url=daemon.url, timeout=60) as c:
        return c.request(method, path, **kwargs)


def test_health_needs_no_token(daemon):
    r = raw(daemon, "GET", "/health")
    assert r.status_code == 200 and r.json()["ok"] is True


@pytest.mark.parametrize("path,method", [("/status", "GET"), ("/search", "POST"), ("/ask", "POST"),
                                         ("/responses", "GET"), ("/preferences/stats", "GET")])
def test_no_token_is_401(daemon, path, method):
    r = raw(daemon, method, path, json={"query": "x", "question": "x"})
    assert r.status_code == 401
    assert "token" in r.json()["error"]


def test_wrong_token_is_401(daemon):
    r = raw(daemon, "GET", "/status", headers={"Authorization": "Bearer " + "x" * len(daemon.token)})
    assert r.status_code == 401
    r = raw(daemon, "GET", "/status", headers={"Authorization": daemon.token})  # no "Bearer"
    assert r.status_code == 401


def test_right_token_is_200(daemon):
    r = daemon.http.get("/status")
    assert r.status_code == 200
    assert r.json()["index"]["notes_indexed"] >= 15


def test_foreign_host_header_is_rejected(daemon):
    # a DNS-rebinding page reaches 127.0.0.1 under its own name
    r = raw(daemon, "GET", "/status", headers={"Host": "evil.example:8765",
                                                "Authorization": f"Bearer {daemon.token}"})
    assert r.status_code == 400 and "Host" in r.json()["error"]
    assert raw(daemon, "GET", "/health", headers={"Host": "localhost"}).status_code == 200


def test_cors_only_for_obsidian(daemon):
    pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
    evil = raw(daemon, "OPTIONS", "/ask", headers={"Origin": "https://evil.example", **pre})
    assert "access-control-allow-origin" not in evil.headers
    good = raw(daemon, "OPTIONS", "/ask", headers={"Origin": "app://obsidian.md", **pre})
    assert good.headers["access-control-allow-origin"] == "app://obsidian.md"
    simple = daemon.http.get("/status", headers={"Origin": "https://evil.example"})
    assert simple.headers.get("access-control-allow-origin") in (None, "app://obsidian.md")
    assert simple.headers.get("access-control-allow-origin") != "*"


def test_oversized_body_is_413(daemon):
    big = {"question": "x" * (daemon.services.settings.server.max_body_bytes + 10)}
    r = daemon.http.post("/ask", json=big)
    assert r.status_code == 413 and "body" in r.json()["error"]


def test_oversized_chunked_body_is_413(daemon):
    limit = daemon.services.settings.server.max_body_bytes

    def chunks():
        for _ in range(limit // 1000 + 5):
            yield b"x" * 1000

    r = daemon.http.post("/ask", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413


def test_malformed_json_is_422(daemon):
    r = daemon.http.post("/ask", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "error" in r.json()
    r = daemon.http.post("/search", json={"query": ""})
    assert r.status_code == 422 and "query" in r.json()["error"]


def test_question_over_limit_is_422(daemon):
    limit = daemon.services.settings.server.max_question_chars
    r = daemon.http.post("/ask", json={"question": "why " * (limit // 4 + 10)})
    assert r.status_code == 422 and "max_question_chars" in r.json()["error"]


def test_no_route_reads_files_outside_the_vault(daemon):
    for path in ("/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/static/../../etc/passwd", "/notes/..%2f..%2fetc%2fpasswd"):
        r = daemon.http.get(path)
        assert r.status_code == 404, path
        assert "root:" not in r.text
    hits = daemon.http.post("/search", json={"query": "../../../../etc/passwd root", "k": 20}).json()["hits"]
    assert all(not h["path"].startswith(("/", "..")) and ".." not in h["path"].split("/") for h in hits)
    # the API surface has no route that takes a file path
    spec = daemon.http.get("/openapi.json").json()
    assert not [p for p in spec["paths"] if "{" in p and "path" in p.lower()]


def test_refuses_non_loopback_bind_without_flag(tmp_path, embedder):
    from vault_agent.config import load_settings
    from vault_agent.daemon import Daemon
    from vault_agent.errors import UserError
    from vault_agent.paths import app_dirs

    settings = load_settings(vault=tmp_path, server={"host": "0.0.0.0"})
    with pytest.raises(UserError, match="--allow-remote"):
        Daemon(settings, tmp_path, app_dirs(), embedder=embedder)


def test_token_file_is_private(daemon):
    import stat

    from vault_agent.paths import app_dirs

    mode = stat.S_IMODE(daemon.daemon.dirs.token_file.stat().st_mode)
    assert mode == 0o600
    assert app_dirs() is not None
