"""A deterministic stand-in for LlamaBackend: same interface, no model, no llama_cpp import.

For tests of everything around the model (API guards, feedback, the TUI, benchmarks' smoke runs)
where a real generation adds minutes and nothing to check. The text depends only on the prompt,
the seed and the temperature, so two samples with different seeds differ (compare) and a rerun
gives the same answer. It cites context [1] when the prompt has any, as the real model is asked to.

    Daemon(settings, vault, dirs, backend=FakeBackend())
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from ..errors import UserError
from .base import ModelStamp

if TYPE_CHECKING:
    from ..cpu.share import CpuShare

_WORDS = ("water", "tomatoes", "daily", "starter", "flour", "notes", "garden", "run", "easy", "morning",
          "check", "the", "runbook", "first", "then", "rest", "weekly", "keep", "it", "simple")


class FakeBackend:
    """Deterministic fake of LlamaBackend (both are llm.base.Backend). Knobs for tests: `token_delay_s`
    spaces out streamed pieces (a number, or a function of the messages); `fail_next` is raised by the next
    generation (fault injection); `one_answer` makes every seed give the same text; `parallel`
    lets generations interleave; `before_generation(messages)` runs before each one, outside the
    lock. `generations` counts generations run."""

    def __init__(self, *, n_ctx: int = 2048, max_tokens: int = 24,
                 token_delay_s: float | Callable[[list[dict[str, str]]], float] = 0.0,
                 model_id: str = "fake-model.gguf") -> None:
        self.model_id = model_id
        self.model_path: Path | None = None  # None: no file stands behind the fake (until switch_model)
        self.switch_delay_s = 0.0
        self.adapter_version: str | None = None
        self.adapter_path: Path | None = None
        self.generation_lock = threading.Lock()
        self.max_tokens = max_tokens
        self.token_delay_s = token_delay_s
        self.fail_next: BaseException | None = None
        self.one_answer = False  # True: every seed gives the same text (a model that has collapsed)
        self.parallel = False  # True: generations interleave (like a server with several slots)
        self.before_generation: Callable[[list[dict[str, str]]], None] | None = None
        self.generations = 0  # finished or cancelled generations, for tests to wait on
        self.cpu_share: CpuShare | None = None  # set by the daemon as on the real model; unused here
        self._n_ctx = n_ctx
        self._closed = False

    @property
    def n_ctx(self) -> int:
        self._open()
        return self._n_ctx

    def count_tokens(self, text: str) -> int:
        """About four characters per token, as for English with a BPE vocabulary."""
        return math.ceil(len(text.encode("utf-8")) / 4)

    def generation_args(self, *, max_tokens: int | None = None, temperature: float | None = None,
                        seed: int | None = None) -> dict[str, Any]:
        return {"max_tokens": max_tokens or self.max_tokens, "temperature": temperature or 0.0,
                "seed": 0 if seed is None else seed}

    def answer_for(self, messages: list[dict[str, str]], *, max_tokens: int | None = None,
                   temperature: float | None = None, seed: int | None = None,
                   adapter_version: str | None = None) -> list[str]:
        """The pieces stream_chat would yield for these arguments (an adapter changes the words)."""
        args = self.generation_args(max_tokens=max_tokens, temperature=temperature, seed=seed)
        # Greedy decoding ignores the seed, as llama.cpp does at temperature 0.
        salt = args["seed"] if args["temperature"] > 0 and not self.one_answer else 0
        digest = hashlib.sha256(json.dumps([messages, salt, adapter_version]).encode()).digest()
        has_context = any(m.get("role") == "user" and "\n[1] " in m.get("content", "") for m in messages)
        pieces = ["From", " your", " notes", " [1]:"] if has_context else ["I", " don't", " know:"]
        pieces += [" " + _WORDS[b % len(_WORDS)] for b in digest]
        return (pieces[: args["max_tokens"] - 1] + ["."])[: args["max_tokens"]]

    def stream_chat(self, messages: list[dict[str, str]], *, max_tokens: int | None = None,
                    temperature: float | None = None, seed: int | None = None,
                    cancel: threading.Event | None = None, stamp: ModelStamp | None = None,
                    adapter: tuple[Path | None, str | None] | None = None) -> Iterator[str]:
        delay = self.token_delay_s(messages) if callable(self.token_delay_s) else self.token_delay_s
        if self.before_generation is not None:  # a test's hook, e.g. to hold generations back
            self.before_generation(messages)
        with self.generation_lock:  # one generation at a time, as with llama.cpp
            self._open()
            version = self.adapter_version if adapter is None else adapter[1]  # a one-answer override
            if stamp is not None:  # identity taken under the lock
                stamp.model_id, stamp.adapter_version = self.model_id, version
            pieces = self.answer_for(messages, max_tokens=max_tokens, temperature=temperature, seed=seed,
                                     adapter_version=version)
            if self.parallel:  # a server with several slots: others generate between our tokens
                self.generation_lock.release()
            try:
                if self.fail_next is not None:
                    err, self.fail_next = self.fail_next, None
                    raise err
                for piece in pieces:
                    if cancel is not None and cancel.is_set():
                        return
                    if delay:
                        time.sleep(delay)  # a model's decode time, not a wait for anything
                    yield piece
            finally:
                self.generations += 1
                if self.parallel:
                    self.generation_lock.acquire()

    def chat(self, messages: list[dict[str, str]], *, max_tokens: int | None = None,
             temperature: float | None = None, seed: int | None = None,
             cancel: threading.Event | None = None, stamp: ModelStamp | None = None,
             adapter: tuple[Path | None, str | None] | None = None) -> str:
        return "".join(self.stream_chat(messages, max_tokens=max_tokens, temperature=temperature, seed=seed,
                                        cancel=cancel, stamp=stamp, adapter=adapter))

    @property
    def adapter_served_as(self) -> str | None:
        return None if self.adapter_path is None else "runtime"  # the fake never merges

    def set_adapter(self, path: Path | None, version: str | None, scale: float = 1.0) -> float:
        with self.generation_lock:
            self._open()
            if path is not None and not Path(path).is_file():
                raise UserError(f"LoRA adapter {path} does not exist")
            self.adapter_path = Path(path) if path is not None else None
            self.adapter_version = version if path is not None else None
            return 0.0

    def switch_model(self, path: Path, adapter: tuple[Path | None, str | None] = (None, None)) -> float:
        """As LlamaBackend's: serve `path` from the next generation on, after the running one finishes.
        The file must exist; `switch_delay_s` stands for the load time (outside the lock, as there)."""
        if not Path(path).is_file():
            raise UserError(f"cannot load model {path}: no such file")
        if self.switch_delay_s:
            time.sleep(self.switch_delay_s)  # a model's load time, not a wait for anything
        with self.generation_lock:
            self._open()
            self.model_id = Path(path).name
            self.model_path = Path(path)
            self.adapter_path = Path(adapter[0]) if adapter[0] is not None else None
            self.adapter_version = adapter[1] if adapter[0] is not None else None
        return 0.0

    def close(self) -> None:
        with self.generation_lock:
            self._closed = True

    def _open(self) -> None:
        if self._closed:
            raise RuntimeError("the model has been closed")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
