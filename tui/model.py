"""What the rating app keeps in memory: queue items, outgoing actions, and how they reach the API.

Nothing here touches Textual, so the rules can be read (and tested) on their own.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from vault_agent.client import ApiClient, ApiError

# Kept in the outbox and retried: busy or storage trouble (503, the preference log locked or the
# disk full), restarting (502/504, or 401: a new token after a restart).
TRANSIENT_STATUS = {401, 502, 503, 504}
RESPONSES_LIMIT = 200
COMPARISONS_LIMIT = 50


@dataclass
class Item:
    """One thing to rate: a single answer ('response') or two answers to choose from ('comparison')."""

    kind: str
    data: dict[str, Any]

    @property
    def id(self) -> str:
        return self.data["id"]

    @property
    def question(self) -> str:
        return self.data.get("question") or ""


@dataclass
class Action:
    """One user action on its way to the daemon. Its idempotency key is made once, so every
    retry of the same action is recorded once."""

    kind: str  # rate | correct | choose | undo
    item: Item
    value: Any = None  # +1/-1, the correction text, or 'A'/'B'/'tie'
    target: Action | None = None  # for undo: the rate action it undoes
    key: str = field(default_factory=lambda: uuid.uuid4().hex)
    state: str = "queued"  # queued | sending | done | failed | cancelled
    result: dict[str, Any] | None = None

    def describe(self) -> str:
        if self.kind == "rate":
            return "👍" if self.value == 1 else "👎"
        if self.kind == "choose":
            return "tie" if self.value == "tie" else f"choice {self.value}"
        return {"correct": "correction", "undo": "undo"}[self.kind]


class NothingToUndo(Exception):
    pass


def send(client: ApiClient, action: Action) -> dict[str, Any]:
    """Perform one action; raises DaemonDown / ApiError as the client does."""
    item = action.item
    if action.kind == "rate":
        return client.rate(item.id, action.value, key=action.key)
    if action.kind == "correct":
        return client.correct(item.id, action.value, key=action.key)
    if action.kind == "choose":
        return client.choose(item.id, action.value, key=action.key)
    if action.kind == "undo":
        target = action.target
        if target is None or target.state != "done" or not target.result:
            raise NothingToUndo("that rating was never saved, so there is nothing to undo")
        return client.undo_rating(target.result["rating"]["id"], key=action.key)
    raise ValueError(f"unknown action {action.kind!r}")


def is_transient(exc: ApiError) -> bool:
    return exc.status in TRANSIENT_STATUS


def build_items(comparisons: list[dict], responses: list[dict]) -> tuple[list[Item], dict[str, dict]]:
    """Pending comparisons first (newest first), then unrated single answers (newest first).

    Answers that belong to a comparison (source 'compare') are shown only as part of it, and
    synthetic ones are training material, not something to rate. Returns the items and a lookup
    of every fetched response by id (a comparison shows its answers' cited notes from it)."""
    lookup = {r["id"]: r for r in responses}
    items = [Item("comparison", c) for c in comparisons]
    items += [Item("response", r) for r in responses if r.get("source", "ask") == "ask"]
    return items, lookup


def merge(current: list[Item], fetched: list[Item], handled: set[str], complete: bool) -> list[Item]:
    """The queue after a reload: what is on screen keeps its place, new items go to the end,
    items already acted on here are left out. When the fetch was complete (under the limits) and
    nothing is waiting to be sent, items that are gone from the daemon (rated elsewhere) drop out."""
    fetched_ids = {i.id for i in fetched}
    keep = [i for i in current if i.id not in handled and (not complete or i.id in fetched_ids)]
    have = {i.id for i in keep}
    return keep + [i for i in fetched if i.id not in have and i.id not in handled]


def default_client_factory() -> ApiClient | None:
    from vault_agent.paths import app_dirs

    return ApiClient.discover(app_dirs(), timeout=30)


def default_target() -> str:
    """Where the default factory looks, for the banner."""
    try:
        from vault_agent import discovery
        from vault_agent.paths import app_dirs

        dirs = app_dirs()
        if (info := discovery.read(dirs)) is not None:
            return f"no daemon answers at {info.url}"
        return f"no running daemon found ({dirs.daemon_file} is missing or unreadable)"
    except Exception:  # noqa: BLE001 - the banner must never fail
        return "no running daemon found"
