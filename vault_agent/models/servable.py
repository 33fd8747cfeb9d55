"""Whether llama.cpp can answer chat with a GGUF, read from its header: shared by `models list`
and by the training side's own check (train/architectures.py), which starts from it."""

from __future__ import annotations

from typing import Any, Mapping


def why_not_servable(metadata: Mapping[str, Any]) -> str | None:
    """None for a chat model llama.cpp can answer with; else why not, in a few words."""
    arch = str(metadata.get("general.architecture", "") or "")
    kind = str(metadata.get("general.type", "model") or "model")
    if kind == "mmproj" or arch == "clip":
        return "a vision projector (mmproj), not a chat model"
    if kind == "adapter":
        return "a LoRA adapter, not a model"
    if not arch:
        return "no architecture in the GGUF header"
    if metadata.get(f"{arch}.pooling_type") is not None or arch in ("bert", "nomic-bert", "jina-bert-v2"):
        return "an embedding model, not a chat model"
    if not metadata.get("tokenizer.chat_template"):
        return "not a chat model (no chat template in the GGUF)"
    return None
