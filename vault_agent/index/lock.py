"""One owner per index: whoever writes an index directory (the daemon, or `vault-agent index` when
no daemon runs) holds an exclusive flock on its `writer.lock`; read-only openers hold a shared one.

Chroma's persistent client is not safe across processes, and a writer resets the index when its
settings differ, so two writers (or a writer and a reader that opened behind its back) must never
meet. The holder also writes `owner.json` (pid, role, url) so a refused process can say who has it
and clients can find the daemon that owns this vault. flock locks die with their process: a crash
never leaves a stale lock, only a stale owner.json, which is ignored once its pid is gone.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

from ..errors import UserError

LOCK_NAME = "writer.lock"
OWNER_NAME = "owner.json"


class IndexBusy(UserError):
    """Another process writes this index; `owner` says who, when known."""

    def __init__(self, message: str, owner: dict | None = None):
        super().__init__(message)
        self.owner = owner


class IndexNotWritable(UserError):
    """The index folder can't be written (read-only file system, permissions, full disk)."""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, belongs to someone else
        return True
    return True


def read_owner(directory: Path) -> dict | None:
    """The live writer of this index directory as {pid, role, url, vault}, or None."""
    try:
        owner = json.loads((directory / OWNER_NAME).read_text())
        pid = int(owner["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return owner if pid_alive(pid) else None


def describe(owner: dict | None) -> str:
    if not owner:
        return "another vault-agent process"
    if owner.get("role") == "serve":
        where = f" at {owner['url']}" if owner.get("url") else " (still starting)"
        return f"the daemon (pid {owner['pid']}){where}"
    return f"`vault-agent {owner.get('role', 'index')}` (pid {owner['pid']})"


class IndexLock:
    def __init__(self, directory: Path):
        self.directory = directory
        self.path = directory / LOCK_NAME
        self.owner_file = directory / OWNER_NAME
        self._fd: int | None = None
        self.exclusive = False
        self._owner: dict = {}

    def acquire_writer(self, role: str, vault: Path, wait: float = 30.0) -> "IndexLock":
        """Exclusive: refuses at once when another writer lives; waits up to `wait` s for readers."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        except OSError as exc:  # a read-only or full disk, or a folder of another user: say so in one line
            raise IndexNotWritable(f"cannot write the index folder {self.directory} ({exc.strerror or exc}); "
                                   "make it writable (or set VAULT_AGENT_HOME to a folder that is)") from None
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                owner = read_owner(self.directory)
                if owner is not None or time.monotonic() > deadline:  # a live writer, or readers that never leave
                    os.close(fd)
                    raise IndexBusy(f"the index of {vault} is in use by {describe(owner)}", owner) from None
                time.sleep(0.1)  # a short read-only command (status, search) holds it shared
        self._fd, self.exclusive = fd, True
        self._owner = {"pid": os.getpid(), "role": role, "url": None, "vault": str(vault)}
        self._write_owner()
        return self

    def acquire_reader(self, vault: Path) -> "IndexLock":
        """Shared, never waits: a running writer means reading behind its back; say who it is instead.
        Creates nothing: with no lock file there is no index yet (nor a writer)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return self
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            owner = read_owner(self.directory)
            raise IndexBusy(f"the index of {vault} is being written by {describe(owner)}; try again when it "
                            "finishes", owner) from None
        self._fd = fd
        return self

    def set_url(self, url: str) -> None:
        if self.exclusive:
            self._owner["url"] = url
            self._write_owner()

    def _write_owner(self) -> None:
        tmp = self.owner_file.with_name(f"{OWNER_NAME}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self._owner))
        os.replace(tmp, self.owner_file)

    def release(self) -> None:
        if self._fd is None:
            return
        if self.exclusive:
            try:
                self.owner_file.unlink()  # only the holder of the exclusive lock ever writes it
            except OSError:
                pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd, self.exclusive = None, False
