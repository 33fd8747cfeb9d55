"""Which base model an adapter was trained on: a fingerprint of the GGUF file plus its architecture.

The fingerprint is the file's size and the SHA-256 of its first 8 MiB (header, tokenizer and the
start of the weights), not of the whole file: hashing an 8B model takes ~10 s, this takes
milliseconds, and two different models of the same size with the same first 8 MiB do not occur in
practice. A copy of a file under another name has the same fingerprint (it is the same model).
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any

HASHED_BYTES = 8 * 1024 * 1024


def fingerprint(path: Path) -> str:
    st = os.stat(path)
    return _fingerprint(os.path.realpath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _fingerprint(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        digest.update(f.read(HASHED_BYTES))
    return f"{size}:{digest.hexdigest()[:24]}"


def base_record(path: Path) -> dict[str, Any]:
    """What an adapter version records about the model it was trained for (version/base.json)."""
    st = os.stat(path)
    return {"file": Path(path).name, **_identity(os.path.realpath(path), st.st_size, st.st_mtime_ns)}


@functools.lru_cache(maxsize=64)
def _identity(path: str, size: int, mtime_ns: int) -> dict[str, Any]:
    """Fingerprint and architecture of one file version (GET /adapters asks for them per version)."""
    from .gguf_header import BadGGUF, read_header

    try:
        arch = read_header(Path(path)).metadata.get("general.architecture")
    except (BadGGUF, OSError):
        arch = None
    return {"fingerprint": _fingerprint(path, size, mtime_ns), "architecture": arch}


def same_base(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    return bool(a and b and a.get("fingerprint") == b.get("fingerprint"))
