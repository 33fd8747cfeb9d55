"""Which files in a vault are notes, and reading one safely.

Every problem with a single file becomes a NoteReadError with a one-line reason, so the indexer can
record it in `status` and carry on with the rest of the vault.
"""

from __future__ import annotations

import fnmatch
import os
import stat as stat_mod
from dataclasses import dataclass
from pathlib import Path

from ..errors import VaultNotFound

ALWAYS_IGNORED = (".obsidian/*", ".trash/*", ".git/*")
BINARY_SNIFF_BYTES = 8192


class NoteReadError(Exception):
    """A note that cannot be indexed; str() is the reason shown to the user."""


@dataclass(frozen=True)
class NoteFile:
    rel: str  # vault-relative, forward slashes
    mtime_ns: int
    size: int


def resolve_vault(path: str | Path | None) -> Path:
    if path is None:
        raise VaultNotFound("no vault configured: pass --vault PATH or set `vault` in config.toml")
    vault = Path(path).expanduser()
    if not vault.is_dir():
        raise VaultNotFound(f"vault folder not found: {vault} (pass --vault PATH to an existing folder)")
    return vault.resolve()


class VaultFiles:
    """The notes of one vault: listing, ignore rules, path safety, reading."""

    def __init__(self, root: Path, ignore: list[str] | tuple[str, ...] = (), max_bytes: int = 5 * 2**20):
        self.root = root
        self.patterns = tuple(ALWAYS_IGNORED) + tuple(ignore)
        self.max_bytes = max_bytes

    def is_ignored(self, rel: str) -> bool:
        if not rel.lower().endswith(".md"):
            return True
        parts = rel.split("/")
        if any(p.startswith(".") for p in parts):  # hidden folders/files: .obsidian, .trash, editor temp files
            return True
        return any(fnmatch.fnmatch(rel, pat) for pat in self.patterns)

    def is_ignored_folder(self, rel: str) -> bool:
        """True when nothing inside this vault-relative folder can be a note (.git/, .obsidian/, ignore globs)."""
        if rel in ("", "."):
            return False
        if any(p.startswith(".") for p in rel.split("/")):
            return True
        probe = f"{rel}/_.md"  # a note that would live directly in the folder
        return any(fnmatch.fnmatch(probe, pat) for pat in self.patterns)

    def relative(self, path: str | Path) -> str | None:
        """Vault-relative posix path of an absolute path, or None when it lies outside the vault."""
        try:
            rel = Path(os.path.abspath(path)).relative_to(self.root)
        except ValueError:
            return None
        return rel.as_posix()

    def scan(self) -> tuple[dict[str, NoteFile], dict[str, str]]:
        """All notes with their stat, plus per-file errors. Symlinked folders are not followed (no loops).

        A folder that cannot be listed is reported as an error keyed "folder/" (trailing slash): the
        indexer keeps the notes it had from there instead of taking them for deleted."""
        found: dict[str, NoteFile] = {}
        errors: dict[str, str] = {}

        def folder_error(e: OSError) -> None:
            rel = self.relative(e.filename) if e.filename else None
            if rel and rel != "." and not self.is_ignored_folder(rel):
                errors[rel + "/"] = f"cannot list folder: {e.strerror or e}"

        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False, onerror=folder_error):
            rel_dir = self.relative(dirpath) or "."
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                if self.is_ignored(rel):
                    continue
                try:
                    found[rel] = self.stat(rel)
                except NoteReadError as e:
                    errors[rel] = str(e)
                except FileNotFoundError:
                    continue  # vanished between listing and stat
        return found, errors

    def absolute(self, rel: str) -> Path:
        return self.root / rel

    def stat(self, rel: str) -> NoteFile:
        path = self.absolute(rel)
        try:
            if path.is_symlink():
                target = path.resolve(strict=True)  # raises on loops and dangling links
                if self.relative(target) is None:
                    raise NoteReadError("symlink points outside the vault; not indexed")
            st = path.stat()
        except RuntimeError as e:  # symlink loop on some Pythons
            raise NoteReadError(f"symlink loop: {e}") from None
        except OSError as e:
            if isinstance(e, FileNotFoundError) and not path.is_symlink():
                raise
            raise NoteReadError(f"cannot read: {e.strerror or e}") from None
        if not stat_mod.S_ISREG(st.st_mode):
            raise NoteReadError("not a regular file (a pipe, socket or device named .md); not indexed")
        return NoteFile(rel, st.st_mtime_ns, st.st_size)

    def read(self, rel: str) -> tuple[str, str | None]:
        """Text of a note and a warning (e.g. bad UTF-8), or NoteReadError. FileNotFoundError passes through.

        Opened non-blocking and checked with fstat on the open descriptor, so a named pipe or device
        that took a note's place after the scan is refused instead of blocking the indexer forever."""
        try:
            data = self._read_regular(self.absolute(rel))
        except FileNotFoundError:
            raise
        except OSError as e:  # PermissionError, EIO, ELOOP, ...: this file's problem, never the vault's
            raise NoteReadError(f"cannot read: {e.strerror or e}") from None
        if b"\x00" in data[:BINARY_SNIFF_BYTES]:
            raise NoteReadError("binary file with a .md name; not indexed")
        try:
            return data.decode("utf-8-sig"), None
        except UnicodeDecodeError as e:
            warning = f"not valid UTF-8 (byte {e.start}); indexed with replacement characters"
            return data.decode("utf-8", errors="replace"), warning

    def _read_regular(self, path: Path) -> bytes:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        try:
            st = os.fstat(fd)
            if not stat_mod.S_ISREG(st.st_mode):
                raise NoteReadError("not a regular file (a pipe, socket or device named .md); not indexed")
            if st.st_size > self.max_bytes:
                raise NoteReadError(
                    f"too large: {st.st_size / 2**20:.1f} MB > {self.max_bytes / 2**20:g} MB "
                    "(raise index.max_note_mb to index it)"
                )
            chunks, left = [], self.max_bytes + 1  # the file may grow after fstat: never read unbounded
            while left > 0:
                block = os.read(fd, min(left, 1 << 20))
                if not block:
                    break
                chunks.append(block)
                left -= len(block)
            data = b"".join(chunks)
            if len(data) > self.max_bytes:
                raise NoteReadError(f"too large: over {self.max_bytes / 2**20:g} MB (raise index.max_note_mb to index it)")
            return data
        finally:
            os.close(fd)
