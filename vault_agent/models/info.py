"""One row of `models list`: what a GGUF model is (from its header) and what the loop can do with it."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .gguf_header import BadGGUF
from .header_cache import HeaderCache
from .servable import why_not_servable

SERVE, SERVE_TRAIN = "serve", "serve+train"


@dataclass(frozen=True)
class Found:
    """A model file a store holds, before its header is read. `paths`: the parts of a split model,
    in order (one for most). `problem`: why it cannot be used, known without reading it (a manifest
    pointing at a missing blob, a missing part)."""

    name: str
    source: str  # bundled, folder, ollama, lmstudio, huggingface, path
    paths: tuple[Path, ...]
    problem: str | None = None


@dataclass
class ModelInfo:
    name: str
    source: str
    path: str  # the first part of a split model
    architecture: str | None = None
    parameters: int | None = None  # counted from the tensor shapes
    quantization: str | None = None  # e.g. Q4_K_M (general.file_type)
    context_length: int | None = None
    size_bytes: int | None = None  # on disk, every part
    chat_template: bool = False
    can: str | None = None  # serve, serve+train, or None: cannot be served
    why_not: str | None = None  # why not serve+train (or why not even serve)
    parts: int = 1
    served: bool = False  # the daemon (or config) serves this one now
    metadata: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        del out["metadata"]
        return out


def describe(found: Found, cache: HeaderCache | None = None) -> ModelInfo:
    """Read the header of each part (through `cache`); any problem becomes the row's `why_not`, never
    an exception."""
    from ..train.architectures import why_not_trainable

    info = ModelInfo(found.name, found.source, str(found.paths[0]), parts=len(found.paths))
    try:
        info.size_bytes = sum(os.stat(p).st_size for p in found.paths)
    except OSError:
        pass
    if found.problem:
        info.why_not = found.problem
        return info
    cache = cache or _PROCESS_CACHE
    try:
        summaries = [_checked(cache, p) for p in found.paths]
    except (BadGGUF, OSError, ValueError) as e:  # ValueError: a file mmap refuses (a /proc file)
        info.why_not = f"cannot read it: {e.strerror or e}" if isinstance(e, OSError) else str(e)
        return info
    meta = summaries[0]["metadata"]
    arch = meta.get("general.architecture")
    info.metadata = meta
    info.architecture = arch if isinstance(arch, str) else None
    info.parameters = sum(s["parameters"] for s in summaries) or None
    info.quantization = summaries[0]["quantization"]
    ctx = meta.get(f"{arch}.context_length")
    info.context_length = ctx if isinstance(ctx, int) else None
    info.chat_template = bool(meta.get("tokenizer.chat_template"))
    cannot = why_not_servable(meta)
    if cannot:
        info.why_not = cannot
        return info
    info.why_not = why_not_trainable(meta)
    info.can = SERVE if info.why_not else SERVE_TRAIN
    return info


def _checked(cache: HeaderCache, path: Path) -> dict[str, Any]:
    summary, size = cache.summary(path)
    if size < summary["data_end"]:
        raise BadGGUF(f"truncated: {size} of {summary['data_end']} bytes (an interrupted download?)")
    return summary


_PROCESS_CACHE = HeaderCache(None)  # without a file: headers read once per process (the daemon's listings)
