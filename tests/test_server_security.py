"""The guards of a localhost server that any web page on this machine can reach.
Real uvicorn on a loopback port, the hashing embedder, a temp copy of the sample vault; the chat model
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


def raw_request(api, method: bytes, target: bytes) -> tuple[int, bytes]:
    """Send the request line exactly as given (httpx would normalise `..` segments away)."""
    port = int(api.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(method + b" " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                     + api.token.encode() + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data


@pytest.fixture
def adapter_bait(api):
    """Loadable-looking adapter files just outside the adapters folder, where a version name that
    climbs out of it (`..`) would find them."""
    from vault_agent.paths import app_dirs
    from vault_agent.train import active, registry

    baits = set()
    for dirs in (api.daemon.dirs, app_dirs()):  # the daemon's, and this test's home (the session's daemon may use either)
        adapters = registry.adapters_dir(dirs)
        adapters.mkdir(parents=True, exist_ok=True)  # a path climbs out of a folder only if it exists
        baits |= {adapters.parent / active.GGUF_NAME, adapters.parent / "outside" / active.GGUF_NAME}
    for bait in baits:
        bait.parent.mkdir(parents=True, exist_ok=True)
        bait.write_bytes(b"not an adapter of ours")
    yield
    for bait in baits:
        bait.unlink()


# The one route that turns a request value into a file path: POST /adapters/{version}/activate.
@pytest.mark.parametrize("version", [b"..", b"%2e%2e", b"..%2foutside", b"%2E%2E%2Foutside", b"v0001%2f..%2f.."])
def test_adapter_activation_never_reaches_outside_the_adapters_folder(api, adapter_bait, version):
    served = api.backend.adapter_version, api.backend.adapter_path
    status, data = raw_request(api, b"POST", b"/adapters/" + version + b"/activate")
    assert status == 404, (version, data[-300:])
    assert (api.backend.adapter_version, api.backend.adapter_path) == served  # nothing was loaded
    assert api.http.get("/adapters").json()["active"] is None


def test_notes_that_lead_outside_the_vault_are_never_indexed_or_returned(make_vault, tmp_path, agent_home,
                                                                          embedder):
    """Symlinks in the vault to a note or a folder outside it: never indexed, so no search hit or
    citation can carry their text or a path outside the vault, at start-up or when made later."""
    from conftest import start_daemon, wait_until
    from vault_agent.llm.fake import FakeBackend

    outside = make_vault({"secret.md": "# Secret\n\nThe zanzibar passphrase is kept here.\n",
                          "Folder/deep.md": "# Deep\n\nMore zanzibar passphrase notes.\n"}, name="outside")
    vault = make_vault({"Inside.md": "# Inside\n\nA note about the zanzibar ferry timetable.\n"})
    (vault / "Leak.md").symlink_to(outside / "secret.md")
    (vault / "Linked").symlink_to(outside / "Folder", target_is_directory=True)
    backend = FakeBackend()
    running = start_daemon(vault, agent_home, embedder, backend, server={"port": 0},
                           index={"debounce_seconds": 0.1})
    try:
        def leaked(hits_or_citations):
            return [h for h in hits_or_citations
                    if h["path"] not in ("Inside.md",) or "passphrase" in h.get("text", "")]

        status = running.http.get("/status").json()["index"]
        assert status["notes_indexed"] == 1 and "Leak.md" in status["failed"]
        hits = running.http.post("/search", json={"query": "zanzibar passphrase", "k": 20}).json()["hits"]
        assert [h["path"] for h in hits] == ["Inside.md"] and not leaked(hits)
        answer = running.http.post("/ask", json={"question": "What is the zanzibar passphrase?"}).json()
        assert not leaked(answer["citations"]) and "passphrase is kept" not in answer["answer"]
        (vault / "Later.md").symlink_to(outside / "secret.md")  # made while the watcher runs
        wait_until(lambda: "Later.md" in running.http.get("/status").json()["index"]["failed"], timeout=30,
                   what="the watcher to refuse Later.md")
        hits = running.http.post("/search", json={"query": "zanzibar passphrase", "k": 20}).json()["hits"]
        assert [h["path"] for h in hits] == ["Inside.md"]
    finally:
        running.stop()
        backend.close()


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
