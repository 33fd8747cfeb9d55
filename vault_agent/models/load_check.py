"""Does llama.cpp accept this GGUF? A vocabulary-only load (no weights, no context: well under a
second even for an 8B model), closed at once. `models use` runs it when no daemon runs; a running
daemon's switch loads the model for real and keeps the old one if that fails."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .catalog import UnusableModel


def check_loads(path: Path) -> None:
    from ..llm.lora import import_llama_cpp, llama_errors, llama_reason

    llama_cpp = import_llama_cpp()
    try:
        with llama_errors() as errors:
            llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, n_ctx=256, verbose=False)
    except (ValueError, RuntimeError):
        raise UnusableModel(f"llama.cpp cannot load {path}: {llama_reason(errors)}") from None
    except UserError:
        raise
    llm.close()
