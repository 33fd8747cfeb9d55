"""A small client of the daemon's HTTP API, shared by `vault-agent ask` and the TUI."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from . import discovery
from .errors import UserError
from .paths import AppDirs


class ApiError(UserError):
    def __init__(self, status: int, message: str):
        super().__init__(f"{message} (HTTP {status})")
        self.status = status


class DaemonDown(UserError):
    pass


class ApiClient:
    def __init__(self, base_url: str, token: str, timeout: float = 120.0):
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout,
                                 headers={"Authorization": f"Bearer {token}"})

    @classmethod
    def discover(cls, dirs: AppDirs, timeout: float | None = 120.0) -> "ApiClient | None":
        """A client for the daemon this user runs (whichever vault it serves), or None when none answers."""
        info = discovery.read(dirs)
        return cls.connect(dirs, info.url if info else None, timeout)

    @classmethod
    def for_vault(cls, dirs: AppDirs, vault: Path, timeout: float | None = 120.0) -> "ApiClient | None":
        """A client for the daemon serving this vault, or None when none answers. Commands on a
        vault go through it: the daemon's index must not be opened behind its back."""
        return cls.connect(dirs, discovery.url_for_vault(dirs, vault), timeout)

    @classmethod
    def connect(cls, dirs: AppDirs, url: str | None, timeout: float | None) -> "ApiClient | None":
        """A client for the daemon at `url` with the user's token, if it answers /health; else None."""
        token = discovery.token(dirs)
        if url is None or token is None:
            return None
        client = cls(url, token, timeout)
        try:
            client.health()
        except UserError:
            client.close()
            return None
        return client

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kwargs) -> Any:
        try:
            r = self.http.request(method, path, **kwargs)
        except httpx.TransportError as e:
            raise DaemonDown(f"daemon at {self.base_url} is not answering ({type(e).__name__})") from None
        return self._json(r)

    @staticmethod
    def _json(r: httpx.Response) -> Any:
        try:
            data = r.json()
        except ValueError:
            data = {"error": r.text[:200]}
        if r.status_code >= 400:
            raise ApiError(r.status_code, data.get("error", str(data)) if isinstance(data, dict) else str(data))
        return data

    def health(self) -> dict:
        return self._call("GET", "/health")

    def status(self) -> dict:
        return self._call("GET", "/status")

    def reindex(self, full: bool = False) -> dict:
        """Have the daemon reconcile now (`vault-agent index` while it runs): {report, status}."""
        return self._call("POST", "/index", json={"full": full}, timeout=None)  # a big vault takes a while

    def search(self, query: str, k: int | None = None) -> list[dict]:
        """k None: the daemon's search.top_k."""
        body = {"query": query} if k is None else {"query": query, "k": k}
        return self._call("POST", "/search", json=body)["hits"]

    def ask_stream(self, question: str) -> Iterator[tuple[str, dict]]:
        """(event, data) pairs from /ask/stream: 'token' events, then 'final' (or 'error')."""
        try:
            with self.http.stream("POST", "/ask/stream", json={"question": question}) as r:
                if r.status_code >= 400:
                    r.read()
                    self._json(r)
                event = None
                for line in r.iter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event:
                        yield event, json.loads(line[6:])
        except httpx.TransportError as e:
            raise DaemonDown(f"daemon at {self.base_url} stopped answering ({type(e).__name__})") from None

    def rate(self, response_id: str, rating: int, comment: str | None = None, key: str | None = None) -> dict:
        body = {"response_id": response_id, "rating": rating, "comment": comment,
                "idempotency_key": key or uuid.uuid4().hex}
        return self._call("POST", "/feedback", json=body)

    def correct(self, response_id: str, text: str, key: str | None = None) -> dict:
        body = {"response_id": response_id, "correction": text, "idempotency_key": key or uuid.uuid4().hex}
        return self._call("POST", "/feedback", json=body)

    def undo_rating(self, rating_id: str, key: str | None = None) -> dict:
        return self._call("POST", f"/ratings/{rating_id}/undo",
                          headers={"Idempotency-Key": key or uuid.uuid4().hex})

    def compare(self, question: str, key: str | None = None) -> dict:
        return self._call("POST", "/compare", json={"question": question, "idempotency_key": key or uuid.uuid4().hex})

    def choose(self, comparison_id: str, choice: str, key: str | None = None) -> dict:
        return self._call("POST", f"/compare/{comparison_id}/choice",
                          json={"choice": choice, "idempotency_key": key or uuid.uuid4().hex})

    def pending_comparisons(self, limit: int = 20) -> list[dict]:
        return self._call("GET", "/compare/pending", params={"limit": limit})["comparisons"]

    def responses(self, unrated: bool = False, limit: int = 50) -> list[dict]:
        return self._call("GET", "/responses", params={"unrated": unrated, "limit": limit})["responses"]

    def stats(self) -> dict:
        return self._call("GET", "/preferences/stats")

    # generic calls, for routes without a helper above (adapters, training)
    def get(self, path: str, **params: Any) -> Any:
        return self._call("GET", path, params=params or None)

    def post(self, path: str, body: dict | None = None) -> Any:
        return self._call("POST", path, json=body or {})

    def __enter__(self) -> "ApiClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
