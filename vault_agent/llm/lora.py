"""The only code that reaches below llama-cpp-python's `Llama` class: its private handles
(`_model.model`, `_ctx.ctx`) and the raw C calls for LoRA adapters, thread counts and log capture.
The serving backend (llm/backend.py), the gate's scorer (train/gate.py, also through BatchDecoder)
and the export test use these helpers, so an upgrade of llama-cpp-python that renames them breaks one file.

Loading a model so that LoRA adapters can be applied to it safely: on CPUs with AMX (Intel
Sapphire Rapids and later), ggml moves the base weights into its AMX "extra" buffer type; a LoRA
adapter cannot live there ("lora for 'blk.0.attn_q.weight' cannot use buft 'AMX', fallback to
CPU") and the first evaluation with the adapter active then segfaulted (llama-cpp-python 0.3.36:
the gate, the hot-swap and the export tests all died on such a machine). Every model that may get
an adapter (the daemon's, the gate's) is therefore loaded with `use_extra_bufts = False` there.
Llama() builds its model params inside its constructor from `llama_model_default_params()`, so
that one function is wrapped while the model loads. Other CPUs keep ggml's extra buffers (weight
repacking), with which adapters were seen to work.

llama_cpp is imported inside functions only: importing it loads a shared library, and the CLI and
HTTP server must start fast.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError

_loading = threading.Lock()  # the wrap is process-wide: one model load at a time

# ggml_log_level in the bundled ggml.h: 3 WARN, 4 ERROR, 5 CONT. llama-cpp-python's _logger.py
# still maps an older enum (3 = ERROR, 4 = DEBUG), so with verbose=False it prints warnings
# and hides errors; we read the levels ourselves.
_WARN, _ERROR, _CONT = 3, 4, 5


def import_llama_cpp() -> Any:
    """Import llama_cpp on first use (it is large, and the CLI's light commands never need it)."""
    import llama_cpp

    return llama_cpp


@functools.cache
def cpu_has_amx() -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(line.startswith("flags") and "amx_tile" in line.split() for line in text.splitlines())


@contextlib.contextmanager
def adapter_safe_loading():
    """While a llama_cpp.Llama is constructed inside: no extra buffer types on AMX CPUs."""
    import llama_cpp.llama_cpp as lib

    with _loading:
        if not cpu_has_amx():
            yield
            return
        original = lib.llama_model_default_params

        def without_extra_buffers():
            params = original()
            params.use_extra_bufts = False
            return params

        lib.llama_model_default_params = without_extra_buffers
        try:
            yield
        finally:
            lib.llama_model_default_params = original


@contextlib.contextmanager
def llama_errors() -> Iterator[list[str]]:
    """Collect llama.cpp's error (else warning) lines meanwhile: the C API returns NULL and only
    logs why. Nothing is printed while this is installed."""
    llama_cpp = import_llama_cpp()

    logged: dict[int, list[str]] = {_WARN: [], _ERROR: []}
    last_level = 0

    def on_log(level: int, text: bytes, _user: Any) -> None:
        nonlocal last_level
        if level != _CONT:
            last_level = level
        if last_level in logged:
            logged[last_level].append(text.decode("utf-8", "replace"))

    lines: list[str] = []
    callback = llama_cpp.llama_log_callback(on_log)  # must stay referenced while installed
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
    try:
        yield lines
    finally:
        try:  # put back llama-cpp-python's own handler
            from llama_cpp import _logger

            llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
        except ImportError:
            llama_cpp.llama_log_set(None, ctypes.c_void_p(0))
        lines.extend(logged[_ERROR] or logged[_WARN])


def llama_reason(lines: list[str]) -> str:
    """All causes `llama_errors` collected, on one line, without llama.cpp's 'function_name: '
    prefixes: 'invalid magic characters: ...; failed to load lora adapter from file'."""
    parts: list[str] = []
    for line in "".join(lines).splitlines():
        line = " ".join(line.split())
        line = line.rsplit("failed to apply lora adapter: ", 1)[-1]
        line = re.sub(r"^\w+: ", "", line)
        if line and line not in parts:
            parts.append(line)
    return "; ".join(parts) or "llama.cpp gave no reason"


def set_threads(llm: Any, threads: int) -> None:
    """Decode and prompt threads for `llm`'s next evaluations (Llama has no public setter)."""
    if threads != llm.context_params.n_threads:
        import_llama_cpp().llama_set_n_threads(llm._ctx.ctx, threads, threads)
        llm.context_params.n_threads = llm.context_params.n_threads_batch = threads


def token_text(llm: Any, token: int) -> str:
    """A token's text in the vocabulary (e.g. '<|im_end|>'), as Llama gives BOS and EOS to its own
    chat formatter."""
    return llm._model.token_get_text(token)


@dataclass(frozen=True, eq=False)
class LoadedLora:
    """A GGUF LoRA loaded for one model (llama_adapter_lora_p); applied by LoraSlot.use."""

    handle: Any
    path: Path


class LoraSlot:
    """The LoRA adapters loaded for one llama_cpp.Llama and the one its context applies (or none).
    Adapters may be loaded ahead and switched between evaluations; the caller resets the KV cache
    when the weights change under cached entries. close() before the Llama's own close: the model
    frees the adapters it still knows about, so freeing one afterwards would be a double free."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self.loaded: list[LoadedLora] = []
        self.current: LoadedLora | None = None

    def load(self, path: Path) -> LoadedLora:
        """Load a GGUF LoRA for this model (not applied yet); UserError says why llama.cpp refused."""
        llama_cpp = import_llama_cpp()

        path = Path(path)
        if not path.is_file():
            raise UserError(f"LoRA adapter {path} does not exist")
        with llama_errors() as errors:
            handle = llama_cpp.llama_adapter_lora_init(self.llm._model.model, str(path).encode("utf-8"))
        if not handle:  # NULL pointer
            raise UserError(f"cannot load LoRA adapter {path}: {llama_reason(errors)}")
        lora = LoadedLora(handle, path)
        self.loaded.append(lora)
        return lora

    def use(self, lora: LoadedLora | None, scale: float = 1.0) -> None:
        """Apply `lora` (None: the plain base) to the context's following evaluations."""
        llama_cpp = import_llama_cpp()

        if lora is None:
            rc = llama_cpp.llama_set_adapters_lora(self.llm._ctx.ctx, None, 0, None)
        else:
            handles = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(lora.handle)
            rc = llama_cpp.llama_set_adapters_lora(self.llm._ctx.ctx, handles, 1, (ctypes.c_float * 1)(scale))
        if rc != 0:
            raise UserError(f"llama.cpp refused the LoRA adapter {lora.path if lora else None} (code {rc})")
        self.current = lora

    def free(self, lora: LoadedLora) -> None:
        """Free an adapter the context does not apply (any more)."""
        if lora is self.current:
            raise ValueError("free() of the adapter in use: use() another first")
        import_llama_cpp().llama_adapter_lora_free(lora.handle)
        self.loaded.remove(lora)

    def close(self) -> None:
        """Detach and free every adapter loaded here."""
        if self.loaded:
            self.use(None)
            for lora in list(self.loaded):
                self.free(lora)


class BatchDecoder:
    """llama.cpp's batch API on a Llama's context, asking logits only for the positions wanted:
    Llama.eval() asks them for all positions or only the last. Bypasses Llama's own token
    bookkeeping, so `clear()` resets it before each pass."""

    def __init__(self, llm: Any, size: int | None = None) -> None:
        self.llm = llm
        self.lib = import_llama_cpp()
        self.size = min(size or llm.n_batch, llm.n_batch)  # tokens per llama_decode call
        self.batch = self.lib.llama_batch_init(self.size, 0, 1)
        self.n_vocab = llm.n_vocab()

    def clear(self) -> None:
        self.llm.reset()
        self.lib.llama_memory_clear(self.lib.llama_get_memory(self.llm._ctx.ctx), True)

    def drop_from(self, pos: int) -> None:
        """Forget the cache entries at positions >= pos."""
        self.lib.llama_memory_seq_rm(self.lib.llama_get_memory(self.llm._ctx.ctx), 0, pos, -1)

    def decode(self, tokens: list[int], pos0: int, outputs_from: int):
        """Evaluate `tokens` at positions pos0.. (appending to the cache); the logits of
        tokens[outputs_from:] as a (rows, vocab) float32 array."""
        import numpy as np

        rows = []
        b = self.batch
        for at in range(0, len(tokens), self.size):
            chunk = tokens[at: at + self.size]
            wanted = 0
            for k, token in enumerate(chunk):
                b.token[k], b.pos[k], b.n_seq_id[k] = token, pos0 + at + k, 1
                b.seq_id[k][0] = 0
                b.logits[k] = at + k >= outputs_from
                wanted += at + k >= outputs_from
            b.n_tokens = len(chunk)
            rc = self.lib.llama_decode(self.llm._ctx.ctx, b)
            if rc != 0:
                raise RuntimeError(f"llama_decode failed (code {rc})")
            if wanted:
                ptr = self.lib.llama_get_logits(self.llm._ctx.ctx)
                flat = np.ctypeslib.as_array(ptr, shape=(wanted * self.n_vocab,))
                rows.append(flat.reshape(wanted, self.n_vocab).copy())
        return np.concatenate(rows) if rows else np.empty((0, self.n_vocab), dtype=np.float32)

    def close(self) -> None:
        if self.batch is not None:
            self.lib.llama_batch_free(self.batch)
            self.batch = None
