"""The DPO loss variants as pure tensor functions (no trainer, no model): what variant_trainer.py
calls and what the tests check against hand-computed numbers.

Notation, per pair i of a batch: dlog_c = log pi(chosen) - log pi_ref(chosen), dlog_r the same for
the rejected answer (sums over the answer's tokens), delta_i = dlog_c - dlog_r.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def dpo_sigmoid_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, margins=None):
    """Per-pair DPO sigmoid loss with an optional per-pair margin (offset) gamma_i:

        loss_i = -log sigmoid(beta * delta_i - gamma_i)

    gamma_i = 0 is plain DPO. A positive gamma_i asks the chosen answer to beat the rejected one by
    gamma_i of implicit reward (beta * delta) before the loss flattens out (the offset of ODPO /
    SimPO's gamma). `beta` is a float or a 0-d tensor (the dynamic beta of one batch)."""
    delta = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    logits = beta * delta
    if margins is not None:
        logits = logits - margins.to(logits)
    return -F.logsigmoid(logits)


def sft_loss(chosen_token_logps, chosen_mask, is_correction, weight: float):
    """The supervised term on corrected answers:

        weight * ( - sum_{i corrected, t} log p(token_t of chosen_i) / #tokens of corrected chosen answers )

    i.e. the mean negative log-likelihood per token of the chosen answers of the rows flagged as
    corrections (the user's own gold answers), times train.sft_weight. Other rows add nothing; a batch
    without a flagged row gives 0. `chosen_token_logps` and `chosen_mask` are (pairs, tokens)."""
    rows = is_correction.to(torch.bool)[:, None].to(chosen_mask.device)
    mask = chosen_mask.to(torch.bool) & rows
    count = mask.sum()
    if weight == 0 or count == 0:
        return chosen_token_logps.new_zeros(())
    return weight * -(chosen_token_logps * mask).sum() / count


@dataclass
class DynamicBeta:
    """beta-DPO (Wu et al. 2024, "beta-DPO: Direct Preference Optimization with Dynamic beta"),
    as in the authors' code (github.com/junkangwu/beta-DPO):

    1. M_i = delta_i, the pair's reward margin in log-ratio units (the authors' code leaves out
       beta0, so alpha is on their scale).
    2. Running statistics, updated with each batch before use (momentum m):
           M0    <- m * M0    + (1 - m) * mean(M_batch)
           sigma <- m * sigma + (1 - m) * std(M_batch)     (population std: a batch of 1 is 0, not NaN)
    3. Margin-guided filtering: draw k = max(1, floor(keep * n)) pairs without replacement with
       probability proportional to w_i = exp(-(M_i - M0)^2 / (2 sigma^2)); pairs whose margin sits far
       from the running mean (outliers: likely noise or already learnt) are the ones dropped. With
       sigma = 0 (e.g. the first step, where policy = reference) every w_i = 1.
    4. beta_batch = beta0 * (1 + alpha * (mean(M_i over the kept pairs) - M0)), clamped to >= 1e-3
       so it stays positive; it carries no gradient.
    The loss is then the mean of dpo_sigmoid_loss over the kept pairs, with beta_batch."""

    beta0: float
    alpha: float
    momentum: float
    keep: float
    margin_mean: float = 0.0  # M0
    margin_std: float = 0.0  # sigma
    min_beta: float = 1e-3

    def update(self, margins: torch.Tensor) -> None:
        m = self.momentum
        batch = margins.detach().float()
        self.margin_mean = m * self.margin_mean + (1 - m) * float(batch.mean())
        self.margin_std = m * self.margin_std + (1 - m) * float(batch.std(correction=0))

    def weights(self, margins: torch.Tensor) -> torch.Tensor:
        batch = margins.detach().float()
        if self.margin_std <= 1e-12:
            return torch.ones_like(batch)
        return torch.exp(-((batch - self.margin_mean) ** 2) / (2 * self.margin_std ** 2))

    def select(self, margins: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A boolean mask of the kept pairs."""
        n = margins.numel()
        k = max(1, math.floor(self.keep * n + 1e-9))
        mask = torch.zeros(n, dtype=torch.bool, device=margins.device)
        if k >= n:
            mask[:] = True
            return mask
        w = self.weights(margins).cpu()
        if not torch.isfinite(w).all() or w.sum() <= 0:  # every pair far out: draw uniformly
            w = torch.ones_like(w)
        idx = torch.multinomial(w, k, replacement=False, generator=generator)
        mask[idx.to(margins.device)] = True
        return mask

    def beta_for(self, margins: torch.Tensor, kept: torch.Tensor) -> float:
        batch_margin = float(margins.detach().float()[kept].mean())
        return max(self.min_beta, self.beta0 * (1 + self.alpha * (batch_margin - self.margin_mean)))

    def step(self, margins: torch.Tensor, generator: torch.Generator | None = None,
             update: bool = True) -> tuple[float, torch.Tensor]:
        """Update the running statistics with this batch (not for evaluation batches), then
        (beta_batch, kept mask)."""
        if update:
            self.update(margins)
        kept = self.select(margins, generator)
        return self.beta_for(margins, kept), kept
