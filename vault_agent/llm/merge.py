"""A served copy of the base GGUF with a GGUF LoRA folded into its weights (W + scale * B @ A).
The merged weights are re-quantised to their own type (where gguf-py can quantise it: Q4_0/Q4_1/
Q5_0/Q5_1/Q8_0, F16, BF16, F32; else F16) or to a type given. llama.cpp's `export-lora` does the
same but is not in the Python package. A merged model decodes with no LoRA matmuls per layer and
token. The price is re-quantisation: on the bundled Q4_1 model the rounding error of Q4_1 is as
large as a typical adapter's change to a weight (tests/test_merge.py), so Q4_1 keeps only part of
what the adapter does; Q8_0 keeps nearly all of it at a larger file.

gguf and numpy are imported inside the functions: the CLI must start fast.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path
from typing import Any

from ..errors import UserError

# gguf's writer logs each file it writes at INFO ("This GGUF file is for Little Endian only", the
# tensor count): noise in the daemon's log whenever a copy is built
logging.getLogger("gguf.gguf_writer").setLevel(logging.WARNING)

_BLOCK_MATMUL = re.compile(r"blk\.\d+\.[a-z_]+\.weight$")  # a layer's matmul weights (norms are 1-D)


def read_lora(lora_path: Path) -> tuple[float, dict[str, tuple[Any, Any]]]:
    """(alpha, {base tensor name: (A [r, in], B [out, r]) as float32}) from a GGUF LoRA."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(lora_path))
    alpha_field = reader.fields.get("adapter.lora.alpha")
    alpha = float(alpha_field.contents()) if alpha_field is not None else None
    parts: dict[str, dict[str, Any]] = {}
    for t in reader.tensors:
        stem, _, which = t.name.rpartition(".")
        if which not in ("lora_a", "lora_b"):
            continue
        parts.setdefault(stem, {})[which] = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
    pairs = {}
    for stem, ab in parts.items():
        if set(ab) != {"lora_a", "lora_b"}:
            raise UserError(f"{lora_path.name}: {stem} lacks one of lora_a / lora_b")
        pairs[stem] = (ab["lora_a"], ab["lora_b"])
    if not pairs:
        raise UserError(f"{lora_path.name} holds no LoRA tensors")
    if alpha is None:  # llama.cpp's default: scale 1 (alpha = rank)
        alpha = float(next(iter(pairs.values()))[0].shape[0])
    return alpha, pairs


def merge_lora(base_gguf: Path, lora_gguf: Path | None, out_path: Path, scale: float = 1.0,
               weight_type: str | None = None, convert_all: bool = False) -> dict:
    """Write `out_path` (temp name, then rename): the base with the adapter merged in, as llama.cpp
    would apply it at `scale`. `weight_type` ("q8_0", "f16", ...; None: each weight's own type) for
    the merged weights; with `convert_all`, every block's matmul weights are written as
    `weight_type`, adapted or not (lora_gguf None: a plain converted copy of the base), so copies
    with and without an adapter differ by the adapter alone. Returns a summary (tensors merged,
    tensors converted, bytes)."""
    import gguf
    import numpy as np

    wanted = None
    if weight_type is not None:
        try:
            wanted = gguf.GGMLQuantizationType[weight_type.upper()]
        except KeyError:
            raise UserError(f"unknown GGUF weight type {weight_type!r}") from None

    alpha, pairs = read_lora(Path(lora_gguf)) if lora_gguf is not None else (1.0, {})
    reader = gguf.GGUFReader(str(base_gguf))
    arch = reader.fields["general.architecture"].contents()
    lora_arch = gguf.GGUFReader(str(lora_gguf)).fields.get("general.architecture") if lora_gguf is not None else None
    if lora_arch is not None and lora_arch.contents() != arch:
        raise UserError(f"{Path(lora_gguf).name} is an adapter for arch {lora_arch.contents()!r}, "
                        f"{Path(base_gguf).name} is {arch!r}")
    out_path = Path(out_path)
    # a name of this process's own: the daemon and a retrain's answer check may build the same copy at once
    tmp = out_path.with_name(f"{out_path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    writer = gguf.GGUFWriter(str(tmp), arch=arch)
    try:
        for name, f in reader.fields.items():
            if name.startswith("GGUF.") or name == "general.architecture":
                continue
            sub = f.types[1] if f.types[0] == gguf.GGUFValueType.ARRAY and len(f.types) > 1 else None
            writer.add_key_value(name, f.contents(), f.types[0], sub_type=sub)
        merged = converted = 0
        for t in reader.tensors:
            convert = convert_all and wanted is not None and _BLOCK_MATMUL.match(t.name) and len(t.shape) == 2
            if t.name not in pairs and (not convert or t.tensor_type == wanted):
                writer.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
                continue
            weight = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
            adapted = t.name in pairs
            if adapted:
                a, b = pairs.pop(t.name)
                if weight.shape != (b.shape[0], a.shape[1]):
                    raise UserError(f"{Path(lora_gguf).name}: {t.name} is {b.shape[0]}x{a.shape[1]} but the base "
                                    f"has {weight.shape[0]}x{weight.shape[1]}; it was made for another model")
                weight += (scale * alpha / a.shape[0]) * (b @ a)
                merged += 1
            else:
                converted += 1
            qtype = wanted if wanted is not None else t.tensor_type
            try:
                data = gguf.quants.quantize(weight, qtype)
            except (NotImplementedError, gguf.quants.QuantError):  # no quantizer for the type, or rows not whole blocks
                if not adapted:  # only converting: the weight as it was
                    writer.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
                    converted -= 1
                    continue
                qtype, data = gguf.GGMLQuantizationType.F16, weight.astype(np.float16)
            writer.add_tensor(t.name, data, raw_dtype=qtype)
        if pairs:
            raise UserError(f"{Path(lora_gguf).name} adapts {sorted(pairs)[0]}, which {Path(base_gguf).name} lacks")
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out_path)
    except BaseException:  # a full disk, an adapter for another model: no half-written copy left behind
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return {"path": str(out_path), "merged_tensors": merged, "converted_tensors": converted,
            "bytes": out_path.stat().st_size}
