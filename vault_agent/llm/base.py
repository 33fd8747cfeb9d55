"""What the rest of the code may use on a language model backend: the `Backend` protocol that
LlamaBackend (llm/backend.py, llama.cpp) and FakeBackend (llm/fake.py, deterministic, for tests)
both implement, and the `ModelStamp` a generation fills in. tests/test_llm_base.py checks that
both classes match this protocol, signature by signature.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Self, runtime_checkable

if TYPE_CHECKING:
    from ..cpu.share import CpuShare


@dataclass
class ModelStamp:
    """Which model and adapter produced a generation. Filled under the generation lock, before
    the first token, so an adapter swap between requests can never mislabel an answer."""

    model_id: str | None = None
    adapter_version: str | None = None


@runtime_checkable
class Backend(Protocol):
    """One chat model with a LoRA adapter slot that can change between generations."""

    model_id: str  # the model file's name, recorded with every answer
    model_path: Path | None  # the served GGUF (None: the fake, until it is switched to a file)
    adapter_version: str | None  # the active adapter's version; None: the plain base model
    adapter_path: Path | None  # the active adapter's GGUF file
    # Shared with the indexer by the daemon: decode on the cores other work leaves free (None: all configured)
    cpu_share: CpuShare | None

    @property
    def n_ctx(self) -> int:
        """The context window, in tokens."""
        ...

    @property
    def adapter_served_as(self) -> str | None:
        """'merged' (a copy of the model with the adapter folded in), 'runtime' (a LoRA applied per
        token) or None (no adapter)."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens `text` takes inside a prompt, for fitting context into n_ctx."""
        ...

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
        """Yield the answer piece by piece, one generation at a time. `stamp` records the model and
        adapter it runs on; `adapter` (path, version) answers this once with another adapter."""
        ...

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
        ...

    def set_adapter(self, path: Path | None, version: str | None, scale: float = 1.0) -> float:
        """Serve `path` (None: no adapter) from the next generation on; UserError keeps the old one.
        Returns the swap's duration in milliseconds."""
        ...

    def switch_model(self, path: Path, adapter: tuple[Path | None, str | None] = (None, None)) -> float:
        """Serve another GGUF (with `adapter` applied, (None, None): none) from the next generation on;
        in-flight generations finish on the old model; UserError keeps the old one. Milliseconds taken."""
        ...

    def close(self) -> None:
        ...

    def __enter__(self) -> Self:
        ...

    def __exit__(self, *exc: object) -> None:
        ...
