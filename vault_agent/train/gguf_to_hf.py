"""A GGUF model -> a bf16 safetensors folder transformers can train, one tensor at a time.

transformers' own `from_pretrained(gguf_file=...)` dequantizes every tensor to fp32 and holds the
whole model (and training needs a second, unmarked copy): 8 bytes a parameter. Here each tensor
is dequantized, un-permuted by transformers' own per-architecture processor, cast to bf16 and
added to a shard that is written once it reaches SHARD_BYTES, so the process holds one shard, one
fp32 tensor and the GGUF pages it is reading (dropped after each shard).

The config comes from the GGUF header via transformers' reader, plus the fields that reader drops
(`header_fixes`): a model whose head size is not hidden / heads, gemma's soft-capping and
attention scale, rope scaling.
"""

from __future__ import annotations

import json
import mmap
import warnings
from pathlib import Path
from typing import Any

from ..errors import UserError

SHARD_BYTES = 512 * 1024**2


def read_header(gguf_path: Path, reader=None) -> dict[str, Any]:
    """The GGUF header's scalar and string fields (arrays such as the vocabulary left out)."""
    import gguf

    reader = reader or gguf.GGUFReader(str(gguf_path))
    out: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if field.types and field.types[0] != gguf.GGUFValueType.ARRAY:
            out[key] = field.contents()
    return out


def header_fixes(header: dict[str, Any]) -> dict[str, Any]:
    """Config fields transformers' GGUF reader leaves at its defaults although the header has them."""
    arch = header.get("general.architecture", "")
    get = lambda key: header.get(f"{arch}.{key}")  # noqa: E731
    fixes: dict[str, Any] = {}
    key_length = get("attention.key_length")
    if key_length:  # qwen3 and gemma: heads are not hidden / n_head wide
        fixes["head_dim"] = int(key_length)
    if arch in ("gemma2", "gemma3"):
        # llama.cpp scales attention by 1/sqrt(head size) (see its gemma graphs); transformers'
        # default query_pre_attn_scalar is 256, right only for models whose heads are 256 wide
        fixes["query_pre_attn_scalar"] = int(key_length or 256)
    if arch == "gemma2":
        for name in ("attn_logit_softcapping", "final_logit_softcapping"):
            if get(name) is not None:
                fixes[name] = float(get(name))
    if get("rope.scaling.type") in ("linear", "yarn") and get("rope.scaling.factor"):
        rope = {"rope_type": get("rope.scaling.type"), "factor": float(get("rope.scaling.factor")),
                "rope_theta": float(get("rope.freq_base") or 10000.0)}
        if get("rope.scaling.original_context_length"):
            rope["original_max_position_embeddings"] = int(get("rope.scaling.original_context_length"))
        fixes["rope_parameters"] = rope
    return fixes


# Llama 3.1-3.3's published rope scaling (low, high, original context); the factor comes from the tensor
LLAMA3_ROPE_CANDIDATES = [(1.0, 4.0, 8192), (1.0, 4.0, 4096), (1.0, 4.0, 16384), (1.0, 8.0, 8192)]


def llama3_rope(factors, values: dict[str, Any]) -> dict[str, Any]:
    """Llama 3.x GGUFs keep their rope scaling as per-frequency divisors (`rope_freqs`, written by
    convert_hf_to_gguf from the llama3 rope parameters) and not in the header: find the parameters
    that give back exactly those divisors, so transformers rotates as llama.cpp does."""
    import math

    import numpy as np

    factors = np.asarray(factors, dtype=np.float64).ravel()
    base = float(values.get("rope_theta", 10000.0))
    dim = int(values.get("head_dim") or values["hidden_size"] // values["num_attention_heads"])
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    factor = float(factors.max())
    for low, high, original in LLAMA3_ROPE_CANDIDATES:
        expect = []
        for freq in freqs:
            wavelen = 2 * math.pi / freq
            if wavelen < original / high:
                expect.append(1.0)
            elif wavelen > original / low:
                expect.append(factor)
            else:
                smooth = (original / wavelen - low) / (high - low)
                expect.append(1 / ((1 - smooth) / factor + smooth))
        if len(expect) == len(factors) and np.allclose(expect, factors, rtol=1e-4):
            return {"rope_type": "llama3", "rope_theta": base, "factor": factor, "low_freq_factor": low,
                    "high_freq_factor": high, "original_max_position_embeddings": original}
    raise UserError("the GGUF's rope frequency factors (rope_freqs) match no Llama 3 rope scaling; "
                    "set train.base_model to an HF checkpoint of the same model")


def config_from_gguf(gguf_path: Path, reader=None):
    """(transformers config, the parsed GGUF config dict, the GGUF header)."""
    from transformers import AutoConfig
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    try:
        parsed = load_gguf_checkpoint(str(gguf_path), return_tensors=False)
    except (ValueError, KeyError, NotImplementedError) as exc:
        raise UserError(f"transformers cannot read {gguf_path} as a training base ({exc}); set train.base_model "
                        "to an HF checkpoint of the same model") from None
    import gguf

    reader = reader or gguf.GGUFReader(str(gguf_path))
    header = read_header(gguf_path, reader)
    values = dict(parsed["config"]) | header_fixes(header)
    freqs = next((t for t in reader.tensors if t.name == "rope_freqs.weight"), None)
    if freqs is not None and header["general.architecture"] == "llama":
        values["rope_parameters"] = llama3_rope(gguf.dequantize(freqs.data, freqs.tensor_type), values)
    model_type = values.pop("model_type")
    if model_type == "gemma3_text" and "rope_parameters" not in values:
        # llama.cpp runs gemma3's local layers at rope base 10000 and the global ones at the header's
        values["rope_parameters"] = {
            "full_attention": {"rope_type": "default", "rope_theta": float(values.get("rope_theta", 1e6))},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}
    config = AutoConfig.for_model(model_type, **values)
    return config, values, header


def write_bf16_checkpoint(gguf_path: Path, dest: Path) -> None:
    """Write config, bf16 safetensors shards (+ index) and tokenizer for `gguf_path` into `dest`."""
    import gguf
    import numpy as np
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor

    reader = gguf.GGUFReader(str(gguf_path))
    config, values, header = config_from_gguf(gguf_path, reader)
    arch = header["general.architecture"]
    with torch.device("meta"):  # names and shapes only: no memory
        skeleton = AutoModelForCausalLM.from_config(config)
    config.architectures = [type(skeleton).__name__]  # what converters (convert_lora_to_gguf) look up
    processor = TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=values | {"model_type": config.model_type})
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    names = gguf_to_hf_names(arch, config.num_hidden_layers, expected)
    if config.tie_word_embeddings:
        expected.pop("lm_head.weight", None)
    del skeleton

    dest.mkdir(parents=True, exist_ok=True)
    pages = getattr(reader.data, "_mmap", None)
    weight_map: dict[str, str] = {}
    shard: dict[str, Any] = {}
    size = 0

    def flush() -> None:
        nonlocal shard, size
        if shard:
            name = f"model-{len(set(weight_map.values())) + 1:05d}.safetensors"
            save_file(shard, str(dest / name), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(shard, name))
        shard, size = {}, 0
        if pages is not None and hasattr(pages, "madvise"):
            pages.madvise(mmap.MADV_DONTNEED)  # the GGUF pages read so far: reloaded from disk if needed

    for tensor in reader.tensors:
        weights = gguf.dequantize(tensor.data, tensor.tensor_type)
        result = processor.process(weights=weights, name=tensor.name, tensor_key_mapping=names,
                                   parsed_parameters={"config": values, "tensors": {}})
        hf_name = names.get(result.name)
        if hf_name is None or hf_name not in expected:
            continue
        with warnings.catch_warnings():  # a read-only view of the GGUF: copied by the cast below
            warnings.simplefilter("ignore", UserWarning)
            value = torch.from_numpy(np.asarray(result.weights, dtype=np.float32)).to(torch.bfloat16)
        if tuple(value.shape) != expected[hf_name]:
            raise UserError(f"{gguf_path.name}: {tensor.name} is {tuple(value.shape)}, but the model its header "
                            f"describes needs {expected[hf_name]} for {hf_name}; the loop cannot train this model")
        shard[hf_name] = value.contiguous()
        size += value.numel() * 2
        if size >= SHARD_BYTES:
            flush()
    flush()
    missing = sorted(set(expected) - set(weight_map))
    if missing:
        raise UserError(f"{gguf_path.name} lacks {len(missing)} weights the model needs (e.g. {missing[0]}); "
                        "the loop cannot train this model")
    total = sum(expected[k][0] * int(np.prod(expected[k][1:])) * 2 for k in weight_map)
    (dest / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    config.dtype = torch.bfloat16
    config.save_pretrained(dest)
    training_tokenizer(gguf_path, header).save_pretrained(dest)
    check_tokenizer_agrees(gguf_path, dest, header)


def gguf_to_hf_names(arch: str, n_layers: int, hf_names) -> dict[str, str]:
    """GGUF tensor name -> HF parameter name, from gguf-py's own table (once, not per submodule
    as transformers' get_gguf_hf_weights_map builds it)."""
    import gguf

    arch_enum = next((k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch), None)
    if arch_enum is None:
        raise UserError(f"gguf-py does not know the architecture {arch!r}")
    table = gguf.get_tensor_name_map(arch_enum, n_layers)
    out = {}
    for hf_name in hf_names:
        stem, _, suffix = hf_name.rpartition(".")
        gguf_name = table.get_name(stem)
        if gguf_name is not None:
            out[f"{gguf_name}.{suffix}"] = hf_name
    return out


# llama.cpp pre-tokenizers (tokenizer.ggml.pre) that transformers' GGUF reader does not know, so it
# would split text the GPT-2 way: their regexes, applied in order as llama.cpp's llama-vocab.cpp does
_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
EXTRA_PRE_TOKENIZERS = {name: (r"\p{N}", _GPT2_SPLIT) for name in ("smollm", "codeshell", "exaone", "minerva")}
PROBE = [{"role": "system", "content": "Answer from the notes. Cite them as [1]."},
         {"role": "user", "content": "[1] Garden.md > Tomatoes\nWater 2x a week, 12-15 L; it's 2026.\n\n"
                                     "Question:  How often?\tAnd why?"}]


def training_tokenizer(gguf_path: Path, header: dict[str, Any]):
    """The GGUF's tokenizer, with the chat template llama.cpp serves with (the header's own) and the
    GGUF's pre-tokenizer where transformers does not know it."""
    from tokenizers import Regex, pre_tokenizers
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    template = header.get("tokenizer.chat_template")
    if template:
        tokenizer.chat_template = template
    splits = EXTRA_PRE_TOKENIZERS.get(str(header.get("tokenizer.ggml.pre", "")))
    if splits and getattr(tokenizer, "backend_tokenizer", None) is not None:
        tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(split), behavior="isolated") for split in splits]
            + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    return tokenizer


def check_tokenizer_agrees(gguf_path: Path, folder: Path, header: dict[str, Any]) -> None:
    """Refuse when the tokenizer training will load from `folder` tokenizes a chat prompt unlike
    llama.cpp (transformers' tokenizer classes may impose their family's pre-tokenizer on reload)."""
    from transformers import AutoTokenizer

    if not header.get("tokenizer.chat_template"):
        return
    trained = trained_prompt_tokens(AutoTokenizer.from_pretrained(str(folder)), PROBE)
    if trained != served_prompt_tokens(gguf_path, PROBE):
        raise UserError(f"transformers tokenizes {gguf_path.name}'s chat prompts differently from llama.cpp "
                        f"(pre-tokenizer {header.get('tokenizer.ggml.pre')!r}): training would see other tokens "
                        "than the served model; set train.base_model to an HF checkpoint of the same model")


def trained_prompt_tokens(tokenizer, messages: list[dict]) -> list[int]:
    """A chat prompt's tokens as training sees them (templated, then tokenized without added
    specials, as TRL and dpo.py do)."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def served_prompt_tokens(gguf_path: Path, messages: list[dict]) -> list[int]:
    """A chat prompt's tokens as llama-cpp-python serves it: the GGUF's template through its
    Jinja2ChatFormatter, tokenized as its chat handler does."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from ..llm.lora import import_llama_cpp, token_text

    llm = import_llama_cpp().Llama(model_path=str(gguf_path), n_ctx=64, vocab_only=True, verbose=False)
    try:
        formatted = Jinja2ChatFormatter(llm.metadata["tokenizer.chat_template"],
                                        eos_token=token_text(llm, llm.token_eos()),
                                        bos_token=token_text(llm, llm.token_bos()))(messages=messages)
        return llm.tokenize(formatted.prompt.encode(), add_bos=not formatted.added_special, special=True)
    finally:
        llm.close()
