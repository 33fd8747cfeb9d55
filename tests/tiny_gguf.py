"""Tiny real GGUF files (the gguf package's writer): a header like a chat model's, a few small tensors.
Enough for everything that reads headers (models list, the switch's checks, the fake backend); not
for llama.cpp to load (no vocabulary): tests that need that use a copy of the bundled model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CHAT_TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}<|assistant|>"


def write_gguf(path: Path, *, arch: str = "llama", chat: bool = True, kind: str | None = None,
               file_type: int | None = 15, context: int = 4096, rows: int = 32, extra: dict | None = None,
               split: tuple[int, int] | None = None) -> Path:
    """A GGUF at `path`: `rows` x 16 f32 embedding + one norm (parameters: rows*16 + 16).
    `kind`: general.type (mmproj, adapter); `split`: (index, count) of a split model's part."""
    import gguf

    path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(path), arch)
    if kind:
        w.add_type(kind)
    w.add_context_length(context)
    if file_type is not None:
        w.add_file_type(file_type)
    if chat:
        w.add_chat_template(CHAT_TEMPLATE)
    for key, value in (extra or {}).items():
        if isinstance(value, int):
            w.add_uint32(key, value)
        else:
            w.add_string(key, str(value))
    if split:
        w.add_uint16("split.no", split[0])
        w.add_uint16("split.count", split[1])
    w.add_tensor("token_embd.weight", np.ones((rows, 16), dtype=np.float32))
    w.add_tensor("output_norm.weight", np.ones(16, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
