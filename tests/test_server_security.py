"""The guards of a localhost server that any web page on this machine can reach.
Real uvicorn on a loopback port, real embeddings, a temp copy of the sample vault; the chat model
is the fake backend (the guards never reach it)."""

from __future__ import annotations

import socket

import httpx
import pytest


def raw(daemon, method, path, **kwargs):
    with httpx.Client(base_url=daemon.url, timeout=60) as c:
        return c.request(method, path, **kwargs)


def test_health_needs_no_token(api):
    r = raw(api, "GET", "/health")
    assert r.status_code == 200 and r.json()["ok"] is True


@pytest.mark.parametrize("path,method", [("/status", "GET"), ("/search", "POST"), ("/ask", "POST"),
                                         ("/responses", "GET"), ("/preferences/stats", "GET")])
def test_no_token_is_401(api, path, method):
    r = raw(api, method, path, json={"query": "x", "question": "x"})
    assert r.status_code == 401
    assert "token" in r.json()["error"]


def test_wrong_token_is_401(api):
    r = raw(api, "GET", "/status", headers={"Authorization": "Bearer " + "x" * len(api.token)})
    assert r.status_code == 401
    r = raw(api, "GET", "/status", headers={"Authorization": api.token})  # no "Bearer"
    assert r.status_code == 401


def test_right_token_is_200(api):
    r = api.http.get("/status")
    assert r.status_code == 200
    assert r.json()["index"]["notes_indexed"] >= 15


def test_foreign_host_header_is_rejected(api):
    # a DNS-rebinding page reaches 127.0.0.1 under its own name
    r = raw(api, "GET", "/status", headers={"Host": "evil.example:8765",
                                                "Authorization": f"Bearer {api.token}"})
    assert r.status_code == 400 and "Host" in r.json()["error"]
    assert raw(api, "GET", "/health", headers={"Host": "localhost"}).status_code == 200


def test_cors_only_for_obsidian(api):
    pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
    evil = raw(api, "OPTIONS", "/ask", headers={"Origin": "https://evil.example", **pre})
    assert "access-control-allow-origin" not in evil.headers
    good = raw(api, "OPTIONS", "/ask", headers={"Origin": "app://obsidian.md", **pre})
    assert good.headers["access-control-allow-origin"] == "app://obsidian.md"
    simple = api.http.get("/status", headers={"Origin": "https://evil.example"})
    assert simple.headers.get("access-control-allow-origin") in (None, "app://obsidian.md")
    assert simple.headers.get("access-control-allow-origin") != "*"


def test_oversized_body_is_413(api):
    big = {"question": "x" * (api.runtime.settings.server.max_body_bytes + 10)}
    r = api.http.post("/ask", json=big)
    assert r.status_code == 413 and "body" in r.json()["error"]


def test_oversized_chunked_body_is_413(api):
    limit = api.runtime.settings.server.max_body_bytes

    def chunks():
        for _ in range(limit // 1000 + 5):
            yield b"x" * 1000

    r = api.http.post("/ask", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413


def test_malformed_json_is_422(api):
    r = api.http.post("/ask", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "error" in r.json()
    r = api.http.post("/search", json={"query": ""})
    assert r.status_code == 422 and "query" in r.json()["error"]


def test_question_over_limit_is_422(api):
    limit = api.runtime.settings.server.max_question_chars
    r = api.http.post("/ask", json={"question": "why " * (limit // 4 + 10)})
    assert r.status_code == 422 and "max_question_chars" in r.json()["error"]


def raw_request(api, target: bytes) -> tuple[int, bytes]:
    """Send the request line exactly as given (httpx would normalise `..` segments away)."""
    port = int(api.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                     + api.token.encode() + b"\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data


@pytest.mark.parametrize("target", [b"/../../etc/passwd", b"/%2e%2e/%2e%2e/etc/passwd", b"/static/../../etc/passwd",
                                    b"/notes/..%2f..%2fetc%2fpasswd", b"/status/../../../etc/passwd"])
def test_no_route_reads_files_outside_the_vault(api, target):
    status, data = raw_request(api, target)
    assert status == 404, (target, data[:200])
    assert b"root:" not in data


def test_search_never_returns_paths_outside_the_vault(api):
    hits = api.http.post("/search", json={"query": "../../../../etc/passwd root", "k": 20}).json()["hits"]
    assert hits and all(not h["path"].startswith(("/", "..")) and ".." not in h["path"].split("/") for h in hits)
    # the API surface has no route that takes a file path
    spec = api.http.get("/openapi.json").json()
    assert not [p for p in spec["paths"] if "{" in p and "path" in p.lower()]


def test_api_docs_need_the_token_and_load_nothing_from_a_cdn(api):
    assert raw(api, "GET", "/openapi.json").status_code == 401
    spec = api.http.get("/openapi.json")
    assert spec.status_code == 200 and spec.json()["paths"]
    for page in ("/docs", "/redoc", "/docs/oauth2-redirect"):  # Swagger UI / ReDoc pull JS from a CDN
        r = api.http.get(page)
        assert r.status_code == 404 and "cdn" not in r.text.lower()


def test_search_uses_top_k_and_the_question_limit(api):
    search = api.runtime.settings.search
    saved = search.top_k
    try:
        search.top_k = 3
        assert len(api.http.post("/search", json={"query": "garden"}).json()["hits"]) == 3
    finally:
        search.top_k = saved
    limit = api.runtime.settings.server.max_question_chars
    r = api.http.post("/search", json={"query": "x" * (limit + 1)})
    assert r.status_code == 422 and "max_question_chars" in r.json()["error"]
    assert r.json()["detail"][0]["loc"] == ["body", "query"]


def test_refuses_non_loopback_bind_without_flag(tmp_path, embedder):
    from vault_agent.config import load_settings
    from vault_agent.daemon import Daemon
    from vault_agent.errors import UserError
    from vault_agent.paths import app_dirs

    settings = load_settings(vault=tmp_path, server={"host": "0.0.0.0"})
    with pytest.raises(UserError, match="--allow-remote"):
        Daemon(settings, tmp_path, app_dirs(), embedder=embedder)


def test_token_file_is_private(api):
    import stat

    token_file = api.daemon.dirs.token_file
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600  # no other user can read it
    assert token_file.read_text().strip() == api.token
