"""LoRA DPO with TRL: the load/training plan, the configs built from it, and the run.

`make_plan` decides everything from the settings and the hardware without loading a model, so
`retrain --dry-run` can print it and the CUDA path can be checked on a machine without a GPU.
The same plan builds the configs that `vault-agent retrain` and benchmarks/train_bench.py use.

Precision comes from the hardware (DESIGN.md): TRL's DPOConfig defaults to bf16 and gradient
checkpointing, which on a CPU without native bf16 made a step ~14x slower. So:
- CUDA: QLoRA. nf4 base (bitsandbytes, double quantization), bf16 compute, gradient
  checkpointing, paged 8-bit AdamW, reference log-probs computed once before training.
- CPU: LoRA in fp32, no checkpointing, plain AdamW.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from . import memory
from .memory import ModelDims


@dataclass
class TrainingPlan:
    device: str  # "cuda" or "cpu"
    base: dict[str, Any]  # source and location of the training base
    quantization: dict[str, Any] | None  # BitsAndBytesConfig kwargs, None for full precision
    dtype: str  # weights of the non-quantized parts
    bf16: bool
    gradient_checkpointing: bool
    optim: str
    precompute_ref_log_probs: bool
    lora: dict[str, Any]
    dpo: dict[str, Any]
    dims: dict[str, Any] | None = None
    memory: dict[str, Any] = field(default_factory=dict)
    variants: dict[str, Any] = field(default_factory=dict)  # SFT term, dynamic beta, margins (variants.py)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def detect_device() -> str:
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def make_plan(train, *, device: str | None = None, base: dict[str, Any] | None = None,
              dims: ModelDims | None = None, seq_len: int | None = None,
              budget: memory.Budget | None = None) -> TrainingPlan:
    """Everything a run would load and use; `train` is a TrainSettings. With the model's `dims`
    and a `budget`, the micro-batch and checkpointing are the fastest that fit (memory.py), and
    DoesNotFit says what to change when nothing does; without a budget, the fastest layout."""
    from .variants import variant_plan

    device = device or detect_device()
    cuda = device == "cuda"
    optim = "paged_adamw_8bit" if cuda else "adamw_torch"
    variants = variant_plan(train)  # a variant that cannot run is refused first
    layout, estimate = _layout(train, device, optim, dims, seq_len or train.max_length, budget)
    return TrainingPlan(
        device=device,
        base=base or {},
        quantization={"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
                      "bnb_4bit_compute_dtype": "bfloat16"} if cuda else None,
        dtype="bfloat16" if cuda else "float32",
        bf16=cuda,
        gradient_checkpointing=layout.gradient_checkpointing,
        optim=optim,
        # the reference pass once, before training, on every device: no second forward per step
        precompute_ref_log_probs=True,
        lora={"r": train.lora_r, "lora_alpha": train.lora_alpha, "lora_dropout": train.lora_dropout,
              "target_modules": train.target_modules, "bias": "none", "task_type": "CAUSAL_LM"},
        dpo={"beta": train.beta, "loss_type": train.loss_type, "learning_rate": train.learning_rate,
             "num_train_epochs": train.epochs, "per_device_train_batch_size": layout.micro_batch,
             "gradient_accumulation_steps": layout.accumulation,
             "max_length": train.max_length, "seed": train.seed},
        dims=asdict(dims) if dims is not None else None,
        memory=estimate,
        variants=variants,
    )


def _layout(train, device: str, optim: str, dims: ModelDims | None, seq_len: int,
            budget: memory.Budget | None) -> tuple[memory.Layout, dict[str, Any]]:
    """(micro-batch layout, its memory estimate): the leanest without dims (no estimate possible,
    so the safe one), the fastest without a budget, else the fastest that fits."""
    candidates = memory.layouts(device, train.batch_size)
    if dims is None:
        return candidates[-1], {}
    cuda = device == "cuda"

    def estimate_for(layout: memory.Layout) -> dict[str, Any]:
        return memory.estimate(dims, device=device, quantized=cuda, weight_bytes=2 if cuda else 4,
                               act_bytes=2 if cuda else 4, lora_r=train.lora_r, eight_bit_optim="8bit" in optim,
                               layout=layout, seq_len=seq_len)

    if budget is None:
        return candidates[0], estimate_for(candidates[0])
    layout, estimate = memory.choose(candidates, budget, estimate_for)
    estimate.update(budget_gib=budget.gib, budget_source=budget.source, free_gib=budget.free_gib)
    return layout, estimate


def dims_from_gguf(path) -> ModelDims:
    """Model shape from a GGUF's metadata (memory-mapped: nothing is dequantized)."""
    import numpy as np
    from gguf import GGUFReader

    reader = GGUFReader(str(path), "r")

    def field_value(key: str, default=None):
        f = reader.fields.get(key)
        if f is None:
            return default
        return f.parts[f.data[0]].tolist()[0] if len(f.data) == 1 else len(f.data)

    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    params = int(sum(int(np.prod(t.shape)) for t in reader.tensors))
    hidden = field_value(f"{arch}.embedding_length")
    return ModelDims(params, field_value(f"{arch}.block_count"), hidden, field_value(f"{arch}.feed_forward_length"),
                     field_value("tokenizer.ggml.tokens"), field_value(f"{arch}.attention.head_count", 0),
                     field_value(f"{arch}.attention.head_count_kv", 0))


# --- configs built from a plan --------------------------------------------------------------

def lora_config(plan: TrainingPlan):
    from peft import LoraConfig

    return LoraConfig(**plan.lora)


def bnb_config(plan: TrainingPlan):
    if plan.quantization is None:
        return None
    import torch
    from transformers import BitsAndBytesConfig

    q = dict(plan.quantization)
    q["bnb_4bit_compute_dtype"] = getattr(torch, q["bnb_4bit_compute_dtype"])
    return BitsAndBytesConfig(**q)


def dpo_config(plan: TrainingPlan, output_dir: str, **overrides):
    """TRL DPOConfig: precision, checkpointing and optimizer from the plan, never TRL's defaults."""
    from trl import DPOConfig

    return DPOConfig(**dpo_config_kwargs(plan, output_dir, **overrides))


def dpo_config_kwargs(plan: TrainingPlan, output_dir: str, **overrides) -> dict[str, Any]:
    """The DPOConfig arguments (separate so the CUDA ones can be checked where DPOConfig would
    refuse bf16 for lack of a GPU)."""
    args = dict(
        output_dir=output_dir, bf16=plan.bf16, fp16=False, gradient_checkpointing=plan.gradient_checkpointing,
        optim=plan.optim, precompute_ref_log_probs=plan.precompute_ref_log_probs, use_cpu=plan.device == "cpu",
        report_to=[], save_strategy="no", logging_steps=1, lr_scheduler_type="constant_with_warmup",
        warmup_steps=0, disable_tqdm=True, dataloader_num_workers=0, remove_unused_columns=False,
        **plan.dpo,
    )
    if plan.gradient_checkpointing:
        args["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    args.update(overrides)
    return args


def load_model(plan: TrainingPlan, location: str):
    """(model, tokenizer) for the plan: nf4 on CUDA, fp32 on CPU."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if plan.device == "cpu":
        from . import cpu_lean

        cpu_lean.apply(plan)
    kwargs: dict[str, Any] = {"dtype": getattr(torch, plan.dtype)}
    if plan.quantization is not None:
        kwargs["quantization_config"] = bnb_config(plan)
        kwargs["device_map"] = {"": 0}
    model = AutoModelForCausalLM.from_pretrained(location, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(location)
    prepare_tokenizer(tokenizer)
    # No peft.prepare_model_for_kbit_training: it upcasts embeddings and norms to fp32 (~1 GB more
    # for a 7B model); TRL's trainer already enables input grads for checkpointing and keeps the
    # adapter in bf16 for QLoRA.
    model.config.use_cache = False
    return model, tokenizer


def prepare_tokenizer(tokenizer) -> None:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def make_trainer(plan: TrainingPlan, model, tokenizer, records: list[dict], output_dir: str,
                 callbacks: list | None = None, **overrides):
    """A DPOTrainer (with the plan's DPO variants, variant_trainer.py) and the plan's LoRA adapter on
    `model` (the reference is the base with the adapter disabled: no second copy in memory)."""
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from .variant_trainer import VariantDPOTrainer

    trainer = VariantDPOTrainer(model=model, args=dpo_config(plan, output_dir, **overrides),
                                train_dataset=Dataset.from_list(records), processing_class=tokenizer,
                                peft_config=lora_config(plan), callbacks=callbacks or [], variants=plan.variants)
    for noisy in (PrinterCallback, ProgressCallback):  # they print to stdout; `--json` owns it, we show progress
        trainer.remove_callback(noisy)
    return trainer


# --- held-out preference metric --------------------------------------------------------------

def _token_split(tokenizer, prompt: list[dict], answer: str, max_length: int) -> tuple[list[int], int]:
    """Token ids of prompt+answer through the chat template, and where the answer starts.
    The prompt is cut from the left when the whole doesn't fit (as TRL does)."""
    p_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": answer}], tokenize=False)
    if not full.startswith(p_text):
        full = p_text + answer + (tokenizer.eos_token or "")
    p_ids = tokenizer(p_text, add_special_tokens=False)["input_ids"]
    a_ids = tokenizer(full[len(p_text):], add_special_tokens=False)["input_ids"]
    a_ids = a_ids[: max(1, max_length // 2)]
    p_ids = p_ids[-max(1, max_length - len(a_ids)):]
    return p_ids + a_ids, len(p_ids)


def answer_logprob(model, tokenizer, prompt: list[dict], answer: str, max_length: int) -> tuple[float, int]:
    """(sum log p of `answer` given the chat `prompt`, its tokens); call under torch.no_grad()."""
    import torch

    ids, start = _token_split(tokenizer, prompt, answer, max_length)
    x = torch.tensor([ids], device=next(model.parameters()).device)
    # logits only where they predict an answer token: (answer, vocab) instead of (sequence, vocab)
    logits = model(input_ids=x, logits_to_keep=len(ids) - start + 1).logits[0, :-1].float()
    part = torch.log_softmax(logits, -1).gather(1, x[0, start:, None])[:, 0]
    return float(part.sum()), int(part.numel())


def answers_logprobs(model, tokenizer, items: list[tuple[list[dict], str]], max_length: int) -> list[tuple[float, int]]:
    """answer_logprob for each (prompt, answer), with the model in eval mode and no gradients."""
    import torch

    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = [answer_logprob(model, tokenizer, prompt, answer, max_length) for prompt, answer in items]
    if was_training:
        model.train()
    return out


def completion_logprobs(model, tokenizer, pairs, max_length: int) -> list[tuple[float, int, float, int]]:
    """Per pair: (sum log p of chosen, its tokens, sum log p of rejected, its tokens)."""
    flat = answers_logprobs(model, tokenizer, [(p.prompt, a) for p in pairs for a in (p.chosen, p.rejected)],
                            max_length)
    return [(*flat[2 * i], *flat[2 * i + 1]) for i in range(len(pairs))]


def preference_metrics(scores: list[tuple[float, int, float, int]]) -> dict[str, float | None]:
    """Length-normalised preference: accuracy = share of pairs whose chosen answer has the higher
    mean per-token log-prob; margin = mean of (chosen - rejected) mean per-token log-prob."""
    if not scores:
        return {"accuracy": None, "margin": None}
    diffs = [sc / max(nc, 1) - sr / max(nr, 1) for sc, nc, sr, nr in scores]
    return {"accuracy": round(sum(d > 0 for d in diffs) / len(diffs), 4), "margin": round(sum(diffs) / len(diffs), 4)}


def reward_metrics(before, after, beta: float) -> dict[str, float | None]:
    """DPO's implicit reward on held-out pairs after training: beta * (policy - reference) log-ratio."""
    if not before:
        return {"reward_accuracy": None, "reward_margin": None}
    margins = [beta * ((a[0] - b[0]) - (a[2] - b[2])) for a, b in zip(after, before)]
    return {"reward_accuracy": round(sum(m > 0 for m in margins) / len(margins), 4),
            "reward_margin": round(sum(margins) / len(margins), 4)}
