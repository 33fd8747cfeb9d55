"""TRL's DPOTrainer with the DPO variants (losses.py) as options: an SFT term on the user's
corrections, beta-DPO's dynamic beta, and per-pair margins. With none of them on, every batch goes
to DPOTrainer's own loss unchanged.

Why `_compute_loss` is the override: in TRL 1.16 the policy forward, the reference log-probs, the
loss and the metrics live in that one method (there is no separate dpo_loss(logps...) hook as in
TRL 0.x). The variants path does the policy forward the way TRL does (the fused LM head it patches
in), takes the reference from TRL's own `compute_ref_log_probs` (which knows the PEFT "adapter off"
reference and the precomputed one), and logs TRL's reward/log-prob metrics under the same names, so
train.log, metrics.json and the divergence check read the same keys. TRL's entropy, logits and token
accuracy metrics are not logged on that path. Single process only (the running beta-DPO statistics
are not synchronised across ranks).

Why not TRL's loss_type=["sigmoid", "sft"] + loss_weights: its SFT term trains on every chosen answer,
and most chosen answers here are not gold (synthetic pairs' chosen is the model's own answer with
context; a thumbs-up answer is only "better"). The user's corrections are the only answers the user
wrote, so the SFT term is masked to the rows flagged `is_correction`.

Per-pair columns: Pair.record() adds `margin` and `is_correction`; DPOTrainer's tokenization keeps
extra columns and `remove_unused_columns=False` (dpo_config_kwargs) keeps them in the examples, but
TRL's collator drops them, so it is wrapped to add `pair_margin` / `pair_is_correction` tensors, which
are taken out of the batch before any model call.
"""

from __future__ import annotations

from typing import Any

import torch
from trl import DPOTrainer

from .losses import DynamicBeta, dpo_sigmoid_loss, sft_loss

PAIR_KEYS = ("pair_margin", "pair_is_correction")


class PairColumnsCollator:
    """TRL's preference collator, plus each pair's margin and correction flag."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.inner(examples)
        batch["pair_margin"] = torch.tensor([float(e.get("margin", 0.0)) for e in examples], dtype=torch.float32)
        batch["pair_is_correction"] = torch.tensor([bool(e.get("is_correction", False)) for e in examples])
        return batch


class VariantDPOTrainer(DPOTrainer):
    def __init__(self, *args, variants: dict[str, Any] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        # Wrapped after TRL built its collator (and after a CUDA run precomputed reference log-probs with it).
        self.data_collator = PairColumnsCollator(self.data_collator)
        variants = variants or {}
        data = self.train_dataset
        columns = set(getattr(data, "column_names", None) or [])
        sigmoid = list(self.loss_types) == ["sigmoid"]
        self.sft_weight = float(variants.get("sft_weight", 0.0))
        self.use_sft = sigmoid and self.sft_weight > 0 and "is_correction" in columns and any(data["is_correction"])
        self.use_margins = "margin" in columns and any(m > 0 for m in data["margin"])
        dyn = variants.get("dynamic_beta")
        self.dynamic_beta = DynamicBeta(self.beta, dyn["alpha"], dyn["momentum"], dyn["keep"]) if dyn else None
        self.variants_on = self.use_sft or self.use_margins or self.dynamic_beta is not None
        if self.variants_on and (not sigmoid or self.ld_alpha is not None or self.use_weighting
                                 or self.f_divergence_type != "reverse_kl" or self.aux_loss_enabled):
            raise ValueError("the DPO variants extend the plain sigmoid loss only (no ld_alpha, WPO weighting, "
                             "f-divergence or MoE aux loss)")

    def compute_ref_log_probs(self, model, inputs):
        inputs = {k: v for k, v in inputs.items() if k not in PAIR_KEYS}
        return super().compute_ref_log_probs(model, inputs)

    def _compute_loss(self, model, inputs, return_outputs):
        pair_margin = inputs.pop("pair_margin", None)
        is_correction = inputs.pop("pair_is_correction", None)
        if not self.variants_on:
            return super()._compute_loss(model, inputs, return_outputs)
        return self._variant_loss(model, inputs, pair_margin, is_correction, return_outputs)

    def _variant_loss(self, model, inputs, pair_margin, is_correction, return_outputs):
        mode = "train" if self.model.training else "eval"
        completion_mask = inputs["completion_mask"]
        shift_mask = completion_mask[..., 1:]
        model_kwargs = {k: v for k, v in inputs.items()
                        if k not in ("completion_mask", "ref_chosen_logps", "ref_rejected_logps")}
        model_kwargs["use_cache"] = False
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(**model_kwargs, labels=labels, fused_lm_head=True)
        per_token = outputs.log_probs[:, -shift_mask.size(1):]  # 0 outside the answers (labels -100)
        chosen_logps, rejected_logps = per_token.sum(dim=1).chunk(2, dim=0)
        if self.precompute_ref_logps:
            ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:
            ref_chosen, ref_rejected = self.compute_ref_log_probs(self.ref_model or self.model, inputs)

        metrics = self._metrics[mode]
        beta: float = self.beta
        kept = torch.ones_like(chosen_logps, dtype=torch.bool)
        if self.dynamic_beta is not None:
            delta = (chosen_logps - ref_chosen) - (rejected_logps - ref_rejected)
            beta, kept = self.dynamic_beta.step(delta, update=mode == "train")
            metrics["beta"].append(beta)
            metrics["dynamic_beta/kept"].append(kept.float().mean().item())
            metrics["dynamic_beta/margin_mean"].append(self.dynamic_beta.margin_mean)
        margins = pair_margin.to(chosen_logps.device) if self.use_margins and pair_margin is not None else None
        per_pair = dpo_sigmoid_loss(chosen_logps, rejected_logps, ref_chosen, ref_rejected, beta, margins)
        loss = dpo = per_pair[kept].mean()
        metrics["dpo_loss"].append(dpo.item())
        if self.use_sft and is_correction is not None:
            chosen_tokens, _ = per_token.chunk(2, dim=0)
            chosen_mask, _ = shift_mask.chunk(2, dim=0)
            sft = sft_loss(chosen_tokens, chosen_mask, is_correction, self.sft_weight)
            loss = loss + sft
            metrics["sft_loss"].append(sft.item())

        # TRL's reward and log-prob metrics, same names (rewards with the configured beta, as TRL logs them)
        chosen_rewards = self.beta * (chosen_logps - ref_chosen).detach()
        rejected_rewards = self.beta * (rejected_logps - ref_rejected).detach()
        metrics["rewards/chosen"].append(chosen_rewards.mean().item())
        metrics["rewards/rejected"].append(rejected_rewards.mean().item())
        metrics["rewards/accuracies"].append((chosen_rewards > rejected_rewards).float().mean().item())
        metrics["rewards/margins"].append((chosen_rewards - rejected_rewards).mean().item())
        metrics["logps/chosen"].append(chosen_logps.detach().mean().item())
        metrics["logps/rejected"].append(rejected_logps.detach().mean().item())
        if mode == "train":
            self._total_train_tokens += int(inputs["attention_mask"].sum().item())
        metrics["num_tokens"] = [self._total_train_tokens]
        return (loss, outputs) if return_outputs else loss
