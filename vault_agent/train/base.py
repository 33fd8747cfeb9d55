"""The model an adapter is trained on.

By default it is the served GGUF itself, dequantized by transformers into an HF model, so the
adapter learns on the weights it will be served with. Transformers marks such a model
"quantized with GGUF" and refuses to train it: we drop `quantization_config`, rebuild it with
`from_config` + `load_state_dict`, and cache the result as safetensors in the data dir (once per
GGUF file). A configured HF checkpoint (path or id) of the same model is the alternative.
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
    dest = Path(base.location)
    _remove_dead_copies(dest)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model, tokenizer = load_trainable_from_gguf(base.gguf)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
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


def load_trainable_from_gguf(gguf: Path):
    """(model, tokenizer) dequantized from a GGUF, fp32, without the GGUF quantization marker."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except (ValueError, OSError, KeyError) as exc:
        raise UserError(f"transformers cannot read {gguf} as a training base ({exc}); set train.base_model to "
                        "an HF checkpoint of the same model") from None
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.tie_weights()
    del loaded
    return model, tokenizer
