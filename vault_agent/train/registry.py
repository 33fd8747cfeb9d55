"""Adapter versions on disk: <data>/adapters/v0001, v0002, ...

A version is built in a hidden temp directory and renamed into place only when complete, so a
crash, NaN loss, Ctrl-C or full disk never leaves half a version. Only the directory rename
publishes it; leftovers of dead runs are removed by the next run (it holds the training lock).
This module never touches which adapter is active (that is the serving side's file).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from ..paths import AppDirs

VERSION = re.compile(r"^v(\d{4,})$")


def adapters_dir(dirs: AppDirs) -> Path:
    return dirs.data / "adapters"


def versions(dirs: AppDirs) -> list[str]:
    root = adapters_dir(dirs)
    if not root.is_dir():
        return []
    names = [p.name for p in root.iterdir() if p.is_dir() and VERSION.match(p.name)]
    return sorted(names, key=lambda n: int(VERSION.match(n).group(1)))


def next_version(dirs: AppDirs) -> str:
    have = versions(dirs)
    n = int(VERSION.match(have[-1]).group(1)) + 1 if have else 1
    return f"v{n:04d}"


def remove_leftovers(dirs: AppDirs) -> list[str]:
    """Temp directories of runs that died; call only while holding the training lock."""
    root = adapters_dir(dirs)
    gone = []
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(".") and ".tmp" in p.name:
                shutil.rmtree(p, ignore_errors=True)
                gone.append(p.name)
    return gone


@contextmanager
def staging(dirs: AppDirs) -> Iterator[tuple[str, Path]]:
    """(version, temp dir). On a normal exit the temp dir becomes the version; on any exception
    (KeyboardInterrupt included) it is deleted and nothing is published."""
    root = adapters_dir(dirs)
    root.mkdir(parents=True, exist_ok=True)
    version = next_version(dirs)
    tmp = root / f".{version}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield version, tmp
        _fsync_tree(tmp)
        os.rename(tmp, root / version)  # fails rather than overwrite an existing version
        _fsync_dir(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    os.replace(tmp, path)


def last_trained_at(dirs: AppDirs) -> str | None:
    """When the newest version started training (UTC ISO), None without versions. Versions made
    before this was recorded fall back to their metrics.json modification time."""
    have = versions(dirs)
    if not have:
        return None
    path = adapters_dir(dirs) / have[-1] / "metrics.json"
    try:
        stamp = json.loads(path.read_text()).get("trained_at")
        if isinstance(stamp, str):
            return stamp
        return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat(timespec="microseconds")
    except (OSError, ValueError, AttributeError):
        return None


def read_metrics(dirs: AppDirs, version: str) -> dict[str, Any] | None:
    try:
        return json.loads((adapters_dir(dirs) / version / "metrics.json").read_text())
    except (OSError, ValueError):
        return None


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
