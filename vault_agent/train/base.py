"""The model an adapter is trained on.

By default it is the served GGUF itself, dequantized tensor by tensor into a bf16 safetensors
folder (gguf_to_hf.py) cached in the data dir (once per GGUF file), so the adapter learns on the
weights it will be served with. A configured HF checkpoint (path or id) of the same model is the
alternative.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..paths import AppDirs
from .pids import pid_alive

SERVING = "serving"


@dataclass
class BaseModel:
    """Where to load the training base from, and what it is."""

    source: str  # "gguf" (materialised from the served GGUF) or "hf"
    location: str  # the cached HF dir, or the configured checkpoint path/id
    gguf: Path | None = None

    @property
    def ready(self) -> bool:
        return self.source == "hf" or (Path(self.location) / "config.json").is_file()


def _cache_key(gguf: Path) -> str:
    st = gguf.stat()
    return hashlib.sha1(f"{gguf.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:12]


def resolve_base(train_settings, llm_settings, dirs: AppDirs) -> BaseModel:
    if train_settings.base_model != SERVING:
        return BaseModel("hf", train_settings.base_model)
    from ..llm.backend import resolve_model_path

    gguf = resolve_model_path(llm_settings.model_path)
    cached = dirs.data / "train-base" / f"{gguf.stem}-{_cache_key(gguf)}"
    return BaseModel("gguf", str(cached), gguf)


def materialise(base: BaseModel) -> Path | str:
    """The HF location to load, materialising the GGUF (once) when needed."""
    if base.source == "hf" or base.ready:
        return base.location
    from .gguf_to_hf import write_bf16_checkpoint

    dest = Path(base.location)
    _remove_dead_copies(dest)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write_bf16_checkpoint(base.gguf, tmp)
        os.replace(tmp, dest)  # readers see the whole copy or none
    except OSError as exc:
        raise UserError(f"could not write the training base to {dest.parent} ({exc.strerror or exc}); "
                        "free some disk space and retry") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(dest)


def _remove_dead_copies(dest: Path) -> None:
    """Half-written copies left by runs that were killed (SIGKILL skips the cleanup): a model's
    size each, so they must not pile up. A copy whose writer still runs is left alone."""
    if not dest.parent.is_dir():
        return
    for tmp in dest.parent.glob(f".{dest.name}.tmp-*"):
        try:
            pid = int(tmp.name.rsplit("-", 1)[1])
        except ValueError:
            continue  # not a name this module writes
        if not pid_alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)


def refuse_untrainable(base: BaseModel) -> None:
    """A one-line UserError, before anything loads, when the served GGUF is not a model the loop
    can train (architectures.why_not_trainable on its header). A base already materialised passed."""
    if base.source != "gguf" or base.ready or base.gguf is None:
        return
    from .architectures import why_not_trainable
    from .gguf_to_hf import read_header

    try:
        header = read_header(base.gguf)
    except (ValueError, OSError) as exc:
        raise UserError(f"cannot read {base.gguf} as a GGUF model ({exc}); retrain trains the served model") from None
    reason = why_not_trainable(header)
    if reason:
        raise UserError(f"retrain cannot train {base.gguf.name}: {reason}; serve a model the loop trains "
                        "(see the README's 'Training other architectures')")
