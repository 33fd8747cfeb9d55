"""What `models list` needs from each GGUF header, kept between runs in <state>/model_headers.json.

Walking a header costs little for small vocabularies but ~0.1-0.5 s for a model with a 128k-token
vocabulary and its merges; a machine with a dozen such models would take seconds on every
`models list`. A summary is keyed by the file's real path, size and modification time, so a
changed or replaced file is read again; summaries of files no longer listed are dropped when a
full listing saves the cache. An unreadable or corrupt cache is an empty one.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from .gguf_header import BadGGUF, SkippedArray, quantization_name, read_header

CACHE_NAME = "model_headers.json"
_FORMAT = 1


def summarise(path: Path) -> dict[str, Any]:
    """The header's scalar metadata (long arrays left out), parameter count, quantization and the
    bytes its tensors need. BadGGUF when it is not a GGUF header."""
    header = read_header(path)
    metadata = {k: v for k, v in header.metadata.items() if not isinstance(v, SkippedArray)}
    return {"metadata": metadata, "parameters": header.parameters,
            "quantization": quantization_name(header.metadata, header), "data_end": header.data_end}


class HeaderCache:
    def __init__(self, file: Path | None) -> None:
        self.file = file
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, Any]] = {}
        self._used: set[str] = set()
        self._dirty = False
        if file is not None:
            try:
                data = json.loads(file.read_text())
                if isinstance(data, dict) and data.get("format") == _FORMAT and isinstance(data.get("files"), dict):
                    self._entries = data["files"]
            except (OSError, ValueError):
                pass

    def summary(self, path: Path) -> tuple[dict[str, Any], int]:
        """(summary, current size) of one file; BadGGUF / OSError as read_header raises them."""
        st = os.stat(path)
        key = f"{os.path.realpath(path)}|{st.st_size}|{st.st_mtime_ns}"
        with self._lock:
            found = self._entries.get(key)
            self._used.add(key)
        if found is None:
            found = summarise(Path(path))
            with self._lock:
                self._entries[key] = found
                self._dirty = True
        return found, st.st_size

    def save(self, prune: bool = False) -> None:
        """Write the cache if anything was added (with `prune`, keep only the files used since loading)."""
        if self.file is None:
            return
        with self._lock:
            if prune and set(self._entries) - self._used:
                self._entries = {k: v for k, v in self._entries.items() if k in self._used}
                self._dirty = True
            if not self._dirty:
                return
            data = json.dumps({"format": _FORMAT, "files": self._entries}, default=str)
            self._dirty = False
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.file.with_name(f".{self.file.name}.{os.getpid()}.tmp")
            tmp.write_text(data)
            os.replace(tmp, self.file)
        except OSError:  # a read-only state folder: the next listing reads the headers again
            pass


def default_cache() -> HeaderCache:
    from ..paths import app_dirs

    return HeaderCache(app_dirs().state / CACHE_NAME)


__all__ = ["BadGGUF", "HeaderCache", "default_cache", "summarise"]
