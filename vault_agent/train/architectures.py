"""Which GGUF models the training loop can take, and why not when it cannot.

One place for the answer, read by `models list` (the "serve+train" column) and by `retrain`
(which refuses in one line before any model loads). `metadata` is a GGUF header as a plain dict
(key -> value), e.g. from `vault_agent.models.gguf_header`.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..models.servable import why_not_servable

# Architectures (GGUF `general.architecture`) that materialise -> LoRA -> GGUF LoRA export is checked
# on against llama.cpp's own converters and runtime, one tiny model of each family's real head shape
# (tests/test_train_architectures.py). Others transformers reads (mistral3, granite, olmo2, ...) are
# left out until they are checked the same way.
TRAINABLE = ("llama", "qwen2", "qwen3", "gemma2", "gemma3", "phi3")


def why_not_trainable(metadata: Mapping[str, Any]) -> str | None:
    """None when the loop can train this model; else a short reason a user can read."""
    cannot_serve = why_not_servable(metadata)
    if cannot_serve:
        return cannot_serve
    arch = str(metadata["general.architecture"])
    if metadata.get(f"{arch}.expert_count"):
        return f"a mixture-of-experts model ({arch}); training it is not supported"
    if arch not in TRAINABLE:
        return f"architecture {arch!r} is not one the loop trains ({', '.join(TRAINABLE)})"
    return None
