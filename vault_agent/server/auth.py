"""Guards for a server that any web page on this machine can reach.

- a bearer token (generated once, file mode 0600) on every route but /health, compared in
  constant time;
- a Host allow-list, so a DNS-rebinding page can't talk to us under its own name;
- a body size limit, checked before the body is read.
CORS (only app://obsidian.md plus configured origins) is Starlette's CORSMiddleware, set in app.py.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
from pathlib import Path

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


class GuardMiddleware:
    """Pure ASGI (so it can also cap streamed request bodies): Host allow-list and body limit."""

    def __init__(self, app, allowed_hosts: set[str], max_body_bytes: int):
        self.app = app
        self.allowed_hosts = {h.lower() for h in allowed_hosts}
        self.max_body = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if hostname.lower() not in self.allowed_hosts:
            return await self._reply(send, *_json_response(400, f"Host {host!r} not allowed (DNS rebinding guard)"))
        length = headers.get("content-length")
        if length and length.isdigit() and int(length) > self.max_body:
            return await self._reply(send, *_json_response(413, f"request body over {self.max_body} bytes"))

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
                return await self._reply(send, *_json_response(413, f"request body over {self.max_body} bytes"))
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for disconnect, as servers do

        await self.app(scope, replay, send)

    @staticmethod
    async def _reply(send, status, headers, body):
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
