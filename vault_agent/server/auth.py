"""Guards for a server that any web page on this machine can reach.

- a bearer token (generated once, file mode 0600) on every route but /health, compared in
  constant time;
- a Host check (one header, `name[:port]`, an allowed name, our own port), so a DNS-rebinding
  page can't talk to us under its own name;
- a body size limit, checked before the body is read.
CORS (only app://obsidian.md plus configured origins) is Starlette's CORSMiddleware, set in app.py.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
from pathlib import Path
from urllib.parse import unquote, urlsplit

from fastapi import Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..errors import UserError

OBSIDIAN_ORIGIN = "app://obsidian.md"
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


class AuthError(UserError):
    """401: missing or wrong token."""

    http_status = 401


def load_or_create_token(path: Path) -> str:
    """The daemon's token: created on first start with `secrets`, readable only by the user."""
    if path.exists():
        token = path.read_text().strip()
        if token:
            return token
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.replace(tmp, path)
    return token


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_bearer = HTTPBearer(auto_error=False)


def token_dependency(expected: str):
    async def require_token(request: Request) -> None:
        creds: HTTPAuthorizationCredentials | None = await _bearer(request)
        given = creds.credentials if creds else ""
        if not given or not secrets.compare_digest(given.encode(), expected.encode()):
            raise AuthError("missing or wrong bearer token (see `vault-agent token`)")

    return require_token


def _json_response(status: int, message: str, extra_headers: list[tuple[bytes, bytes]] = ()):
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra_headers]
    return status, headers, body


HOST_HEADER = re.compile(r"(?P<name>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(?P<port>[0-9]{1,5}))?")


def host_refusal(scope, allowed_hosts: set[str]) -> str | None:
    """Why this request's Host (and absolute-form target) is refused, or None. Exactly one Host
    header; `name[:port]` with a numeric port; the name allowed; the port, when given, the one
    this server listens on; an absolute-form target (`GET http://x/status`) must name the same."""
    hosts = [v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"host"]
    if len(hosts) != 1:
        return f"expected exactly one Host header, got {len(hosts)}"
    host = hosts[0]
    if (why := authority_refusal(host, allowed_hosts, scope.get("server"))) is not None:
        return f"Host {host!r} not allowed ({why}; DNS rebinding guard)"
    target = scope.get("raw_path") or scope["path"].encode()
    if not target.startswith(b"/"):  # absolute form: the target's authority must be the Host
        authority = urlsplit(target.decode("latin-1")).netloc
        if authority.lower() != host.lower():
            return f"request target {target.decode('latin-1')!r} names another host than Host {host!r}"
    return None


def authority_refusal(host: str, allowed_hosts: set[str], server: tuple | None) -> str | None:
    m = HOST_HEADER.fullmatch(host)
    if m is None:
        return "not name[:port]"
    if m["name"].lower() not in allowed_hosts:
        return "unknown name"
    if m["port"] is not None and server and server[1] and int(m["port"]) != server[1]:
        return f"this server listens on port {server[1]}"
    return None


def absolute_target_path(scope) -> dict:
    """An allowed absolute-form target routes like its path (`http://localhost:8765/status` -> /status)."""
    target = scope.get("raw_path") or scope["path"].encode()
    if target.startswith(b"/"):
        return scope
    path = urlsplit(target.decode("latin-1")).path or "/"
    return {**scope, "path": unquote(path), "raw_path": path.encode("latin-1")}


async def reply_error(send, status: int, message: str) -> None:
    status, headers, body = _json_response(status, message)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class HostGuardMiddleware:
    """Pure ASGI, outermost: a request under a foreign name never reaches anything else."""

    def __init__(self, app, allowed_hosts: set[str]):
        self.app = app
        self.allowed_hosts = {h.lower() for h in allowed_hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if (why := host_refusal(scope, self.allowed_hosts)) is not None:
            return await reply_error(send, 400, why)
        await self.app(absolute_target_path(scope), receive, send)


class BodyLimitMiddleware:
    """Pure ASGI (so it can also cap streamed request bodies), inside CORS so a granted origin
    can read its 413."""

    def __init__(self, app, max_body_bytes: int):
        self.app = app
        self.max_body = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = next((v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"content-length"), None)
        if length and length.isdigit() and int(length) > self.max_body:
            return await reply_error(send, 413, f"request body over {self.max_body} bytes")

        # Read the whole (small, capped) body first: a chunked upload can't slip past the limit,
        # and the app never sees a partial body.
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # client went away
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body:
                return await reply_error(send, 413, f"request body over {self.max_body} bytes")
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for disconnect, as servers do

        await self.app(scope, replay, send)
