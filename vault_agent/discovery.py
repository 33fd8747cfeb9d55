"""daemon.json: how a running daemon announces itself (url, pid, vault) and how clients find the
daemon serving a vault. The only module that reads or writes that file."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .paths import AppDirs


@dataclass(frozen=True)
class DaemonInfo:
    url: str
    pid: int | None
    vault: Path | None


def write(dirs: AppDirs, url: str, vault: Path) -> None:
    """Announce this process as the user's daemon (atomically: a reader never sees half a file)."""
    path = dirs.daemon_file
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"url": url, "pid": os.getpid(), "vault": str(vault)}))
    os.replace(tmp, path)


def read(dirs: AppDirs) -> DaemonInfo | None:
    """The last daemon that announced itself (it may have died since), or None."""
    try:
        info = json.loads(dirs.daemon_file.read_text())
        vault = info.get("vault")
        return DaemonInfo(url=str(info["url"]), pid=info.get("pid"), vault=Path(vault) if vault else None)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def remove_if_ours(dirs: AppDirs) -> None:
    """Withdraw the announcement at shutdown, unless another daemon has replaced it since."""
    info = read(dirs)
    if info is not None and info.pid == os.getpid():
        try:
            dirs.daemon_file.unlink()
        except OSError:
            pass


def url_for_vault(dirs: AppDirs, vault: Path) -> str | None:
    """The URL of the daemon serving `vault`: the one that owns its index (owner.json names it), else
    the user's daemon when daemon.json says it serves this vault; None when neither does."""
    from .index.lock import read_owner

    owner = read_owner(dirs.index_for(vault)) or {}
    if owner.get("role") == "serve" and owner.get("url"):
        return owner["url"]
    info = read(dirs)
    return info.url if info is not None and info.vault == vault else None


def token(dirs: AppDirs) -> str | None:
    """The daemon's API token, if one was created."""
    try:
        return dirs.token_file.read_text().strip()
    except OSError:
        return None
