"""Serving the model from a Q8_0 copy, with the active adapter merged in (llm/merge.py) instead of
applied at every token.

Why: llama.cpp's runtime LoRA adds four small ops per adapted weight per token. On a small model
that cost is per op, not per FLOP: the bundled 135M model with the default rank-16 all-linear adapter
decodes at 0.72x of the base, a merged Q8_0 copy at 1.05x with all of the adapter's held-out margin
gain (benchmarks/merge_bench.py). On a ~1B model the runtime path is already at 0.90x and a Q8_0
copy (bigger than a 4-bit base) at 0.86x, so `auto` merges below 1B parameters on the CPU only.
Q4_1, the bundled model's own type, kept 6% of the gain: its rounding step is as large as what
training changes, hence Q8_0 for the merged weights.

With no adapter active the same rule serves a Q8_0 copy of the model itself (`ensure_base_copy`):
on the bundled model it evaluates prompts 1.8x faster than the Q4_1 file (first tokens sooner, the
gate's passes shorter: benchmarks/gate_bench.py) and decodes no slower, and the model then differs
from its adapted copies by the adapter alone. Both convert every block's matmul weights to Q8_0.

A merged copy lives beside the adapter (a version's directory), named for the base it was merged
into. Only the served version and the rollback target keep theirs (`prune_copies`, on each switch).
The model's own copy lives in the cache dir's served-models/ (paths.cache_dir), one per model file,
for the two models used last and the one being served.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from pathlib import Path

from ..errors import UserError

log = logging.getLogger(__name__)

MERGED_TYPE = "q8_0"
AUTO_MAX_PARAMS = 1_000_000_000
COPY_GLOB = "*.merged-*.gguf"
KEEP_BASE_COPIES = 2  # models whose own Q8_0 copy is kept in the cache
_build_lock = threading.Lock()  # one merge at a time: each holds a whole model's weights in numpy


def merge_wanted(mode: str, n_params: int, n_gpu_layers: int) -> bool:
    if mode == "merged":
        return True
    return mode == "auto" and n_gpu_layers == 0 and 0 < n_params < AUTO_MAX_PARAMS


def model_parameters(model: Path) -> int:
    """The model's parameter count from its GGUF header (no model load); 0 for a file whose header
    cannot be read or one part of a split model (a merge reads one file), which are never copied."""
    from ..models.gguf_header import read_header

    try:
        header = read_header(model)
    except (OSError, ValueError):
        return 0
    if int(header.metadata.get("split.count", 1) or 1) > 1:
        return 0
    return header.parameters


def served_copies(mode: str, model: Path, n_gpu_layers: int) -> bool:
    """Whether `model` is served from Q8_0 copies (its own, and each adapter's merged copy) under
    llm.adapter_serving = `mode`; never a file model_parameters cannot count, even when forced."""
    if mode == "runtime":
        return False
    params = model_parameters(model)
    return params > 0 and merge_wanted(mode, params, n_gpu_layers)


def base_copy_or_model(model: Path, in_use: tuple[Path, ...] = ()) -> Path:
    """The model's Q8_0 copy (built now unless it is there), or the model file itself when the copy
    cannot be built (full disk, a weight type gguf-py cannot read): logged, and served all the same.
    `in_use`: copies being served, which the cache's pruning must keep."""
    try:
        return ensure_base_copy(model, in_use=in_use)
    except (UserError, OSError, ValueError) as e:
        log.warning("no Q8_0 copy of %s (%s): using the file itself", model.name, e)
        return model


def merged_or_none(base: Path, adapter: Path, scale: float = 1.0) -> Path | None:
    """The merged copy of `base` with `adapter` (built now unless it is there), or None when it cannot
    be built: logged, and the adapter is applied at run time instead."""
    try:
        return ensure_merged(base, Path(adapter), scale)
    except (UserError, OSError, ValueError) as e:
        log.warning("no merged copy of %s (%s): using it as a runtime LoRA", Path(adapter).name, e)
        return None


def _base_key(base: Path, scale: float = 1.0) -> str:
    """The base file by path, size and mtime: a changed or other base gets its own copy."""
    st = base.stat()
    return hashlib.sha256(f"{base.resolve()}|{st.st_size}|{st.st_mtime_ns}|{scale:g}".encode()).hexdigest()[:12]


def merged_path(base: Path, adapter: Path, scale: float = 1.0) -> Path:
    """Where the copy of `base` with `adapter` merged at `scale` is kept: beside the adapter."""
    return adapter.with_name(f"{adapter.stem}.merged-{_base_key(base, scale)}.gguf")


def base_copies_dir() -> Path:
    from ..paths import cache_dir

    return cache_dir() / "served-models"


def base_copy_path(base: Path, root: Path | None = None) -> Path:
    return (root or base_copies_dir()) / f"{base.stem}.{MERGED_TYPE}-{_base_key(base)}.gguf"


def ensure_base_copy(base: Path, root: Path | None = None, in_use: tuple[Path, ...] = ()) -> Path:
    """The model's own Q8_0 copy, built now (seconds on the bundled model) unless it is there.
    Building one prunes the cache to the copies of the KEEP_BASE_COPIES models used last, plus those
    `in_use`. UserError/OSError when it cannot be built (the caller serves the model file itself)."""
    from .merge import merge_lora

    out = base_copy_path(base, root)
    with _build_lock:
        if out.is_file():
            with contextlib.suppress(OSError):  # a read-only cache still serves its copy
                os.utime(out)  # last used now: pruning keeps the copies used last
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            merge_lora(base, None, out, weight_type=MERGED_TYPE, convert_all=True)
            _prune_base_copies(out.parent, {out, *in_use})
    return out


def _prune_base_copies(folder: Path, keep: set[Path]) -> None:
    """Delete all but the copies of the KEEP_BASE_COPIES models used last and those in `keep` (the
    one just built, the one being served): each is a whole model, and a rebuild takes seconds. An
    older copy of a model file that changed since is one of these and goes in its turn."""
    def used(p: Path) -> int:
        try:
            return p.stat().st_mtime_ns
        except OSError:  # deleted meanwhile (another process pruning)
            return 0

    copies = sorted(folder.glob(f"*.{MERGED_TYPE}-*.gguf"), key=used, reverse=True)
    for old in copies[KEEP_BASE_COPIES:]:
        if old not in keep:
            with contextlib.suppress(OSError):  # gone already, or open where that forbids deleting it (Windows)
                old.unlink()


def ensure_merged(base: Path, adapter: Path, scale: float = 1.0) -> Path:
    """The merged copy's path, built now (seconds on the bundled model) unless a copy newer than the
    adapter file is there. UserError/OSError when it cannot be built (the caller serves the runtime
    LoRA instead)."""
    from .merge import merge_lora

    out = merged_path(base, adapter, scale)
    with _build_lock:
        if not (out.is_file() and out.stat().st_mtime_ns >= adapter.stat().st_mtime_ns):
            merge_lora(base, adapter, out, scale=scale, weight_type=MERGED_TYPE, convert_all=True)
    return out


def prune_copies(adapters_root: Path, keep: set[str]) -> list[Path]:
    """Delete the merged copies in version directories not named in `keep` (the served version and
    the one a rollback would go to): each is a whole model, and a rebuild takes seconds. Returns
    what was deleted."""
    gone = []
    for copy in adapters_root.glob(f"*/{COPY_GLOB}"):
        if copy.parent.name not in keep:
            copy.unlink(missing_ok=True)
            gone.append(copy)
    return gone


def remove_copies(version_dir: Path) -> None:
    """Delete a version's merged copies (the gate built one for a candidate it refused)."""
    for copy in Path(version_dir).glob(COPY_GLOB):
        copy.unlink(missing_ok=True)
