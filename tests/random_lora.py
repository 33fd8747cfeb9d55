"""A GGUF LoRA with random weights for a base GGUF, written directly with gguf-py (no torch, no
PEFT): for tests about how llama.cpp applies, scores or merges an adapter, not about training."""

from __future__ import annotations

from pathlib import Path

ALL_LINEAR = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def random_lora(base: Path, out: Path, targets=ALL_LINEAR, rank: int = 8, scale: float = 0.02, seed: int = 0) -> Path:
    import gguf
    import numpy as np

    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(out), arch="llama")
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", 2.0 * rank)
    for t in gguf.GGUFReader(str(base)).tensors:
        parts = t.name.split(".")
        if len(parts) == 4 and parts[0] == "blk" and parts[2] in targets:
            n_out, n_in = int(t.shape[1]), int(t.shape[0])
            writer.add_tensor(t.name + ".lora_a", (rng.standard_normal((rank, n_in)) * scale).astype(np.float16))
            writer.add_tensor(t.name + ".lora_b", (rng.standard_normal((n_out, rank)) * scale).astype(np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
