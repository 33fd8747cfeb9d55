"""How much memory a retrain may use, what a training plan will use, and the plan that fits.

A retrain that runs out of memory is killed by the kernel, often after most of its time is spent
(the OOM kill this module exists for died at step ~26 of 32: peak memory follows the longest
batch, not the average one). So the plan is chosen before any model loads, from:
- the budget: `train.max_memory_gb`, else a share of the memory free at start (RAM on CPU, VRAM on
  CUDA), so the daemon and the user's apps keep the rest;
- an estimate at `train.max_length` per sequence, the longest any batch can be (prompts are cut
  from the left to fit it, truncate.py), for each candidate layout, fastest first;
and the first candidate whose estimate fits is taken. The effective batch (`train.batch_size`
pairs per optimizer step) never changes: a smaller micro-batch gets gradient accumulation.

The estimate's constants were measured on the bundled model (benchmarks/train_bench.py --rag);
tests/test_train_memory.py checks a real run's peak against it.
"""

from __future__ import annotations

import math
import os
import resource
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError

GIB = 2**30
DEFAULT_SHARE = 0.6  # of what is free at start, when train.max_memory_gb is not set
# Resident size of a training process besides the model and its training state: Python, torch,
# transformers, TRL, datasets, peft and the tokenizer (fitted to the peaks below). A CUDA process holds the CUDA context
# in host memory, but its budget is VRAM, where the context is counted separately.
PROCESS_GIB = {"cpu": 0.35, "cuda": 0.0}
CUDA_CONTEXT_GIB = 0.5
# With checkpointing, the layer being recomputed and its transients are the working set. On CPU,
# with cpu_lean's mmap threshold, one layer's worth: a pair of 1,024-token sequences on the bundled
# model peaked at 1.79 GiB and of 512 at 1.43 GiB, which the constants here reproduce (1.81, 1.40).
# On CUDA (not measured here) two, for the caching allocator's slack.
TRANSIENT_LAYERS = {"cpu": 1, "cuda": 2}
# TRL's fused LM head (trl.kernels.chunked_logprob) projects at most this many tokens times this
# many vocabulary entries at a time, so the logits never exist for the whole batch.
TOKEN_TILE, VOCAB_TILE = 4096, 32768


class DoesNotFit(UserError):
    """Even the leanest plan needs more memory than the budget: said before any model loads."""


@dataclass
class ModelDims:
    """Enough of a model's shape to estimate memory without loading it."""

    params: int
    layers: int
    hidden: int
    intermediate: int
    vocab: int
    heads: int = 0
    kv_heads: int = 0

    @classmethod
    def from_config(cls, config) -> "ModelDims":
        h, i, n = config.hidden_size, config.intermediate_size, config.num_hidden_layers
        heads = config.num_attention_heads
        kv = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or h // heads
        per_layer = h * heads * head_dim * 2 + h * kv * head_dim * 2 + 3 * h * i + 2 * h
        embed = config.vocab_size * h * (1 if getattr(config, "tie_word_embeddings", False) else 2)
        return cls(n * per_layer + embed + h, n, h, i, config.vocab_size, heads, kv)


@dataclass
class Budget:
    gib: float
    source: str  # where the figure came from, for the dry run and the refusal
    free_gib: float | None  # what was free at start (None: could not be read)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Layout:
    """How one optimizer step of `batch` pairs is run."""

    micro_batch: int
    accumulation: int
    gradient_checkpointing: bool


# --- what is free --------------------------------------------------------------------------------

def free_gib(device: str) -> float | None:
    """Memory free now: VRAM on the first CUDA device, else RAM (the lower of the machine's
    MemAvailable and what this process's cgroup still allows)."""
    if device == "cuda":
        import torch

        return torch.cuda.mem_get_info(0)[0] / GIB
    figures = [x for x in (_meminfo_available(), _cgroup_room()) if x is not None]
    return min(figures) / GIB if figures else None


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_room() -> int | None:
    """limit - usage of this process's memory cgroup (v2, else v1); None when unlimited or unknown."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        if controllers == "":  # v2
            base = Path("/sys/fs/cgroup") / rel.lstrip("/")
            files = ("memory.max", "memory.current")
        elif "memory" in controllers.split(","):
            base = Path("/sys/fs/cgroup/memory") / rel.lstrip("/")
            files = ("memory.limit_in_bytes", "memory.usage_in_bytes")
        else:
            continue
        try:
            limit, usage = ((base / f).read_text().strip() for f in files)
        except OSError:
            continue
        if limit.isdigit() and usage.isdigit() and int(limit) < 2**60:
            return max(int(limit) - int(usage), 0)
    return None


def budget(max_memory_gb: float | None, device: str) -> Budget:
    free = free_gib(device)
    if max_memory_gb:
        return Budget(round(float(max_memory_gb), 2), "train.max_memory_gb", _round(free))
    if free is None:
        raise DoesNotFit("cannot tell how much memory is free on this machine; set train.max_memory_gb")
    what = "VRAM" if device == "cuda" else "RAM"
    return Budget(round(free * DEFAULT_SHARE, 2), f"{DEFAULT_SHARE:.0%} of the {free:.1f} GiB {what} free at start",
                  _round(free))


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


# --- the estimate ----------------------------------------------------------------------------------

def estimate(dims: ModelDims, *, device: str, quantized: bool, weight_bytes: int, act_bytes: int,
             lora_r: int, eight_bit_optim: bool, layout: Layout, seq_len: int) -> dict[str, Any]:
    """Peak memory in GiB of a LoRA DPO step: process + weights + LoRA state + activations of one
    micro-batch (chosen and rejected of each pair at seq_len tokens) + the fused LM head's tiles
    over the answer positions (taken as a quarter of each sequence: RAG answers are short)."""
    embed = dims.vocab * dims.hidden * 2  # embeddings and lm_head stay unquantized in bnb
    body = max(dims.params - embed, 0)
    weights = (body * 0.53 + embed * weight_bytes) if quantized else dims.params * weight_bytes  # nf4 + scales
    # LoRA on the 7 linear layers of each block: r * (in + out) each; fp32 weights, grads, Adam moments.
    lora_params = dims.layers * lora_r * (4 * dims.hidden * 2 + 3 * (dims.hidden + dims.intermediate))
    optimizer = lora_params * (4 + 4 + (2 if eight_bit_optim else 8))
    tokens = 2 * layout.micro_batch * seq_len
    # kept for backward, per token and layer: the linear layers' inputs, norms, rotary q/k, the
    # attention output, SiLU and its product (and LoRA's dropout copies)
    per_token_layer = dims.hidden * 14 + dims.intermediate * 5
    if layout.gradient_checkpointing:  # each layer's input is kept; one layer is recomputed at a time
        activations = tokens * (dims.layers * dims.hidden + per_token_layer * TRANSIENT_LAYERS[device]) * act_bytes
    else:
        activations = tokens * dims.layers * per_token_layer * act_bytes
    # one projection tile over the answer positions (cpu_lean.py makes CPU compact as CUDA is), in
    # fp32, with its softmax and gradient temporaries: ~8 tiles in TRL's torch fallback on CPU,
    # ~3 with its Triton kernels
    answers = 2 * layout.micro_batch * (seq_len // 4)
    logits = min(answers, TOKEN_TILE) * min(dims.vocab, VOCAB_TILE) * 4 * (3 if device == "cuda" else 8)
    process = PROCESS_GIB[device] * GIB + (CUDA_CONTEXT_GIB * GIB if device == "cuda" else 0)
    total = process + (weights + optimizer + activations + logits) * 1.1  # allocator fragmentation
    return {"process_gib": round(process / GIB, 2), "weights_gib": round(weights / GIB, 2),
            "lora_params": int(lora_params), "optimizer_gib": round(optimizer / GIB, 3),
            "activations_gib": round(activations / GIB, 2), "logits_gib": round(logits / GIB, 2),
            "total_gib": round(total / GIB, 2), "seq_len": seq_len}


# Turning the served GGUF into the training base (gguf_to_hf.py, once per GGUF) goes one tensor at a
# time into 512 MiB bf16 shards: the process holds a shard, one fp32 tensor and the GGUF pages being
# read. The bound held by benchmarks/materialise_bench.py: 1.5 x the bf16 size + 1 GiB. Errs high;
# it only refuses what would clearly not fit.
MATERIALISE_BF16_COPIES = 1.5
MATERIALISE_OVERHEAD_GIB = 1.0


def materialise_estimate(dims: ModelDims) -> float:
    """Peak GiB of materialising the served GGUF as a training base (gguf_to_hf.py)."""
    return round(MATERIALISE_OVERHEAD_GIB + dims.params * 2 * MATERIALISE_BF16_COPIES / GIB, 2)


def check_materialise(dims: ModelDims, budget_: Budget) -> float:
    """The materialise estimate; DoesNotFit when it is over the budget (before anything loads)."""
    need = materialise_estimate(dims)
    if need > budget_.gib:
        raise DoesNotFit(
            f"turning the served GGUF into a training base needs about {need} GiB, more than the {budget_.gib} GiB "
            f"allowed ({budget_.source}); set train.base_model to an HF checkpoint of the same model, or raise "
            "train.max_memory_gb")
    return need


def layouts(device: str, batch_size: int) -> list[Layout]:
    """Candidates, fastest first. On CUDA a larger micro-batch uses the GPU better and
    checkpointing is cheap next to a 4-bit forward. On CPU there is one: a micro-batch of one pair
    was faster per token than two (41 vs 44 s per 4 pairs of ~1,000 tokens, reference pass
    aside), and without checkpointing a step ran ~17% faster for ~2.5x the peak (9.1 vs 6.4 GB
    before cpu_lean.py): not worth it for a job that runs beside the user's apps."""
    if device == "cuda":
        micros = sorted({m for m in (min(batch_size, 8), 4, 2, 1) if m <= batch_size}, reverse=True)
        return [Layout(m, math.ceil(batch_size / m), True) for m in micros]
    return [Layout(1, batch_size, True)]


def choose(candidates: list[Layout], budget_: Budget, estimate_for) -> tuple[Layout, dict[str, Any]]:
    """The first layout whose estimate fits the budget; DoesNotFit (one line, what to change) if none."""
    leanest: dict[str, Any] = {}
    for layout in candidates:
        leanest = estimate_for(layout)
        if leanest["total_gib"] <= budget_.gib:
            return layout, leanest
    raise DoesNotFit(
        f"even the leanest training plan needs about {leanest['total_gib']} GiB at train.max_length="
        f"{leanest['seq_len']} tokens, more than the {budget_.gib} GiB allowed ({budget_.source}); "
        "lower train.max_length, train a smaller model (train.base_model), or raise train.max_memory_gb")


# --- holding a run to its budget ---------------------------------------------------------------------

def limit_process(gib: float) -> bool:
    """Cap this process's data segment (heap and anonymous maps, where tensors live) so a run
    that outgrows its plan fails alone with a MemoryError instead of the kernel OOM-killing
    whatever is largest. Linux only (RLIMIT_DATA counts mmap since 4.7); False where unavailable."""
    if not hasattr(resource, "RLIMIT_DATA") or not os.uname().sysname == "Linux":
        return False
    limit = int(gib * GIB)
    try:
        _, hard = resource.getrlimit(resource.RLIMIT_DATA)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    except (ValueError, OSError):
        return False
    return True


def peak_rss_gib() -> float:
    """This process's peak resident size so far. VmHWM, not getrusage's ru_maxrss: Linux carries
    ru_maxrss across fork + exec, so a run started by a big parent (a test runner, the daemon)
    would report the parent's peak as its own (seen: 3.46 GiB for a 1.4 GiB run under pytest)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 2**20, 2)  # KiB
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def is_out_of_memory(exc: BaseException) -> bool:
    """A MemoryError, or torch's allocator failing ("DefaultCPUAllocator: can't allocate memory",
    "CUDA out of memory")."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)
