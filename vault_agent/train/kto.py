"""LoRA KTO with TRL's KTOTrainer: single desirable / undesirable answers instead of pairs.

The plan is dpo.make_plan's (same hardware rules: CPU fp32 without checkpointing; CUDA nf4 base,
bf16, gradient checkpointing, paged 8-bit AdamW), so only what differs is here:
- loss_type 'kto', and the desirable / undesirable weights from the counts (examples.kto_weights);
- at least 2 examples per device batch: KTO's KL term pairs each example with its batch neighbour
  and TRL refuses a batch of 1.
"""

from __future__ import annotations

import math
from typing import Any

from .dpo import TrainingPlan, dpo_config_kwargs, lora_config

MIN_MICRO_BATCH = 2


def kto_section(plan: TrainingPlan, counts: dict[str, int], weights: dict[str, float]) -> dict[str, Any]:
    """What the summary shows about a KTO run (beside the plan)."""
    micro = max(plan.dpo["per_device_train_batch_size"], MIN_MICRO_BATCH)
    return {"loss_type": "kto", "beta": plan.dpo["beta"], "per_device_train_batch_size": micro,
            "desirable": counts["desirable"], "undesirable": counts["undesirable"], **weights}


def kto_config_kwargs(plan: TrainingPlan, output_dir: str, weights: dict[str, float], **overrides) -> dict[str, Any]:
    """KTOConfig arguments: the DPO ones from the plan, with KTO's loss, batch floor and weights."""
    micro = max(plan.dpo["per_device_train_batch_size"], MIN_MICRO_BATCH)
    batch = plan.dpo["per_device_train_batch_size"] * plan.dpo["gradient_accumulation_steps"]
    args = dpo_config_kwargs(plan, output_dir, loss_type="kto", per_device_train_batch_size=micro,
                             gradient_accumulation_steps=max(1, math.ceil(batch / micro)))
    args.update(weights)
    args.update(overrides)
    return args


def kto_config(plan: TrainingPlan, output_dir: str, weights: dict[str, float], **overrides):
    import dataclasses

    from trl import KTOConfig

    known = {f.name for f in dataclasses.fields(KTOConfig)}
    # DPO-only arguments (a variant's loss options) do not apply here
    return KTOConfig(**{k: v for k, v in kto_config_kwargs(plan, output_dir, weights, **overrides).items()
                        if k in known})


def make_trainer(plan: TrainingPlan, model, tokenizer, records: list[dict], output_dir: str,
                 weights: dict[str, float], callbacks: list | None = None, **overrides):
    """A KTOTrainer with the plan's LoRA adapter on `model` (the reference is the base with the
    adapter disabled). `records` must already be in the order to train (KTO reads them in order)."""
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import KTOTrainer

    trainer = KTOTrainer(model=model, args=kto_config(plan, output_dir, weights, **overrides),
                         train_dataset=Dataset.from_list(records), processing_class=tokenizer,
                         peft_config=lora_config(plan), callbacks=callbacks or [])
    for noisy in (PrinterCallback, ProgressCallback):  # they print to stdout; `--json` owns it
        trainer.remove_callback(noisy)
    return trainer


def example_logprobs(model, tokenizer, examples, max_length: int) -> list[float]:
    """Mean per-token log-prob of each example's completion."""
    from .dpo import answers_logprobs

    return [s / max(n, 1) for s, n in answers_logprobs(model, tokenizer, [(e.prompt, e.completion) for e in examples],
                                                       max_length)]


def heldout_change(examples, before: list[float], after: list[float]) -> dict[str, Any]:
    """Mean change of the mean token log-prob on held-out desirable and undesirable answers (nats):
    training should raise the first and lower the second."""
    def mean_change(label: bool) -> float | None:
        d = [a - b for e, b, a in zip(examples, before, after) if e.label == label]
        return round(sum(d) / len(d), 4) if d else None

    return {"examples": len(examples), "desirable": sum(e.label for e in examples),
            "undesirable": sum(not e.label for e in examples),
            "desirable_logp_change": mean_change(True), "undesirable_logp_change": mean_change(False)}
