"""PEFT LoRA adapter -> GGUF LoRA file that llama.cpp applies to the serving GGUF at run time.

The file llama.cpp expects: `general.type=adapter`, `adapter.type=lora`, `adapter.lora.alpha`,
and for each adapted weight `<gguf tensor name>.lora_a` (PEFT's lora_A, [r, in]) and `.lora_b`
(lora_B, [out, r]); llama.cpp scales by alpha / r, as PEFT does.

One trap: llama-family GGUFs store q/k projection rows permuted for llama.cpp's rotary layout,
and transformers un-permutes them when it reads a GGUF. An adapter trained on that HF model must
get the same row permutation on lora_b for q_proj / k_proj, or it adapts the wrong rows.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

# Architectures whose GGUF q/k weights are row-permuted (convert_hf_to_gguf's LlamaModel.permute).
_PERMUTED_QK = {"llama"}
_HEAD = re.compile(r"(embed_tokens|lm_head|wte|embed_out)")
_HEAD_MESSAGE = ("the adapter trains {module}: llama.cpp LoRA can't adapt embeddings or the output head; "
                 "leave them out of train.target_modules")


@dataclass
class BaseInfo:
    """What the serving GGUF says about itself, enough to check an adapter fits it."""

    arch: str
    n_blocks: int
    n_head: int
    n_head_kv: int
    shapes: dict[str, tuple[int, ...]]  # gguf tensor name -> torch-order shape (out, in)


def read_base(gguf_path: Path) -> BaseInfo:
    import gguf

    reader = gguf.GGUFReader(str(gguf_path))

    def field(key: str):
        f = reader.fields.get(key)
        if f is None:
            raise UserError(f"{gguf_path} has no {key}: not a model GGUF llama.cpp can adapt")
        value = f.parts[f.data[0]]
        return bytes(value).decode() if f.types[0] == gguf.GGUFValueType.STRING else int(value[0])

    arch = field("general.architecture")
    shapes = {t.name: tuple(int(x) for x in reversed(t.shape)) for t in reader.tensors}
    return BaseInfo(arch, field(f"{arch}.block_count"), field(f"{arch}.attention.head_count"),
                    field(f"{arch}.attention.head_count_kv"), shapes)


def permute_rows(weight, n_head: int):
    """The row order llama.cpp's converter gives q/k weights (rotary halves interleaved per head)."""
    rows = weight.shape[0]
    return weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _module_name(key: str) -> tuple[str, str] | None:
    """'base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight' -> ('model.layers.3.self_attn.q_proj', 'A')."""
    m = re.match(r"^(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.default)?\.weight$", key)
    return (m.group(1), m.group(2)) if m else None


def load_peft_adapter(adapter_dir: Path) -> tuple[dict, dict]:
    """(adapter_config, {module: {'A': tensor, 'B': tensor}}) from a PEFT save_pretrained folder."""
    from safetensors.torch import load_file

    config_path = adapter_dir / "adapter_config.json"
    weights_path = adapter_dir / "adapter_model.safetensors"
    if not config_path.is_file() or not weights_path.is_file():
        raise UserError(f"{adapter_dir} is not a PEFT adapter (adapter_config.json and adapter_model.safetensors)")
    config = json.loads(config_path.read_text())
    if config.get("peft_type", "LORA") != "LORA":
        raise UserError(f"{adapter_dir}: only LoRA adapters can be served, not {config.get('peft_type')}")
    modules: dict[str, dict] = {}
    for key, tensor in load_file(str(weights_path)).items():
        parsed = _module_name(key)
        if parsed is None and _HEAD.search(key):
            raise UserError(_HEAD_MESSAGE.format(module=key))
        if parsed is None:
            raise UserError(f"{adapter_dir}: adapter holds {key}, which is not a LoRA A/B matrix "
                            "(trained embeddings or extra modules can't be served by llama.cpp)")
        modules.setdefault(parsed[0], {})[parsed[1]] = tensor
    return config, modules


def export_gguf_lora(adapter_dir: Path, base_gguf: Path, out_path: Path, *, dtype: str = "f16",
                     permute_qk: bool = True) -> dict:
    """Write `out_path` (temp name, then rename). Refuses adapters that touch embeddings or lm_head
    or don't fit the base. Returns a summary. `permute_qk=False` exists for tests only."""
    import gguf
    import numpy as np

    config, modules = load_peft_adapter(Path(adapter_dir))
    base = read_base(Path(base_gguf))
    names = gguf.get_tensor_name_map(_arch_enum(gguf, base.arch), base.n_blocks)
    rank = int(config.get("r", 0))
    alpha = float(config.get("lora_alpha", rank))
    if config.get("use_rslora") or config.get("use_dora"):
        raise UserError("rsLoRA / DoRA adapters scale differently from what llama.cpp applies; train plain LoRA")
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise UserError("per-module ranks or alphas can't be written as one GGUF LoRA alpha; train plain LoRA")
    np_dtype = {"f16": np.float16, "f32": np.float32}.get(dtype)
    if np_dtype is None:
        raise UserError(f"GGUF LoRA dtype must be f16 or f32, not {dtype}")

    tensors: list[tuple[str, object]] = []
    for module, ab in sorted(modules.items()):
        if _HEAD.search(module):
            raise UserError(_HEAD_MESSAGE.format(module=module))
        if set(ab) != {"A", "B"}:
            raise UserError(f"the adapter's {module} lacks its lora_{'B' if 'A' in ab else 'A'} matrix")
        gguf_name = names.get_name(module + ".weight", try_suffixes=(".weight",))
        if gguf_name is None or gguf_name not in base.shapes:
            raise UserError(f"the adapter's {module} has no matching tensor in {base_gguf.name} "
                            f"({base.arch}); was it trained on another model?")
        a, b = ab["A"].float(), ab["B"].float()
        out_features, in_features = base.shapes[gguf_name]
        if a.shape[1] != in_features or b.shape[0] != out_features or a.shape[0] != b.shape[1]:
            raise UserError(f"the adapter's {module} is {b.shape[0]}x{a.shape[1]} but {base_gguf.name} has "
                            f"{out_features}x{in_features} there; it was trained on another model")
        if permute_qk and base.arch in _PERMUTED_QK:
            if module.endswith("q_proj"):
                b = permute_rows(b, base.n_head)
            elif module.endswith("k_proj"):
                b = permute_rows(b, base.n_head_kv)
        tensors.append((gguf_name + ".lora_a", a.contiguous().numpy().astype(np_dtype)))
        tensors.append((gguf_name + ".lora_b", b.contiguous().numpy().astype(np_dtype)))
    if not tensors:
        raise UserError(f"{adapter_dir} adapts no weights")

    out_path = Path(out_path)
    tmp = out_path.with_name(out_path.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), arch=base.arch)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", alpha)
    for name, array in tensors:
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, out_path)
    return {"path": str(out_path), "tensors": len(tensors) // 2, "rank": rank, "alpha": alpha,
            "dtype": dtype, "bytes": out_path.stat().st_size}


def _arch_enum(gguf, arch: str):
    for enum, name in gguf.MODEL_ARCH_NAMES.items():
        if name == arch:
            return enum
    raise UserError(f"gguf {getattr(gguf, '__version__', '')} does not know the architecture {arch!r}")
