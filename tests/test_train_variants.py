"""The DPO variants (issue 11): each loss on hand-computed tiny tensors, the per-pair columns through
TRL's tokenization and collator, the variant trainer against TRL's own loss, the summary lines, and a
short real training per variant on the tiny random llama."""

from __future__ import annotations

import json
import math

import pytest
import test_train  # tests/ is on sys.path (rootdir conftest, no package): its fixtures and helpers
import torch

from vault_agent.train.losses import DynamicBeta, dpo_sigmoid_loss, sft_loss

tiny_base = test_train.tiny_base  # the fixture: the tiny random llama configured as train.base_model


def softplus(x: float) -> float:
    """-log sigmoid(-x) = log(1 + e^x), by hand."""
    return math.log1p(math.exp(x))


# --- the formulas on tiny tensors ----------------------------------------------------------------

def test_dpo_sigmoid_loss_is_minus_log_sigmoid_of_beta_times_the_log_ratio_difference():
    pc, pr = torch.tensor([-10.0, -5.0]), torch.tensor([-12.0, -4.0])
    rc, rr = torch.tensor([-11.0, -5.0]), torch.tensor([-11.0, -5.0])
    # pair 0: delta = (-10+11) - (-12+11) = 2; pair 1: delta = 0 - 1 = -1; beta 0.5
    got = dpo_sigmoid_loss(pc, pr, rc, rr, 0.5)
    assert got.tolist() == pytest.approx([softplus(-1.0), softplus(0.5)])


def test_a_margin_shifts_the_loss_of_its_pair_only():
    pc, pr = torch.tensor([-10.0, -5.0]), torch.tensor([-12.0, -4.0])
    rc, rr = torch.tensor([-11.0, -5.0]), torch.tensor([-11.0, -5.0])
    got = dpo_sigmoid_loss(pc, pr, rc, rr, 0.5, margins=torch.tensor([1.0, 0.0]))
    # pair 0: -log sigmoid(0.5 * 2 - 1) = log 2; pair 1 as without a margin
    assert got.tolist() == pytest.approx([math.log(2.0), softplus(0.5)])
    bigger = dpo_sigmoid_loss(pc, pr, rc, rr, 0.5, margins=torch.tensor([3.0, 0.0]))
    assert bigger[0] > got[0] and bigger[0].item() == pytest.approx(softplus(2.0))


def test_dynamic_beta_rises_with_a_large_margin_and_falls_with_a_small_one():
    d = DynamicBeta(beta0=0.1, alpha=0.6, momentum=0.9, keep=1.0)
    beta, kept = d.step(torch.tensor([2.0, 2.0, 2.0, 2.0]))
    # M0 = 0.9 * 0 + 0.1 * 2 = 0.2; beta = 0.1 * (1 + 0.6 * (2 - 0.2))
    assert d.margin_mean == pytest.approx(0.2)
    assert beta == pytest.approx(0.1 * (1 + 0.6 * 1.8)) and kept.all()
    beta, _ = d.step(torch.tensor([-1.0, -1.0]))
    # M0 = 0.9 * 0.2 + 0.1 * (-1) = 0.08; beta = 0.1 * (1 + 0.6 * (-1.08))
    assert d.margin_mean == pytest.approx(0.08)
    assert beta == pytest.approx(0.1 * (1 - 0.6 * 1.08))
    beta, _ = d.step(torch.tensor([-10.0]))  # 1 + 0.6 * (-10 + 0.928) < 0: clamped, beta stays positive
    assert beta == pytest.approx(1e-3)
    before = (d.margin_mean, d.margin_std)
    beta, _ = d.step(torch.tensor([5.0]), update=False)  # an evaluation batch leaves the running state alone
    assert (d.margin_mean, d.margin_std) == before and beta == pytest.approx(0.1 * (1 + 0.6 * (5.0 - d.margin_mean)))


def test_margin_guided_filter_weights_and_drops_the_outlier_pair():
    d = DynamicBeta(beta0=0.1, alpha=0.6, momentum=0.9, keep=0.75, margin_mean=0.0, margin_std=1.0)
    margins = torch.tensor([0.0, 1.0, -1.0, 40.0])
    assert d.weights(torch.tensor([0.0, 1.0, 2.0])).tolist() == pytest.approx(
        [1.0, math.exp(-0.5), math.exp(-2.0)])  # exp(-(M - M0)^2 / (2 sigma^2)) with M0 0, sigma 1
    for seed in range(20):
        state = DynamicBeta(**d.__dict__)
        beta, kept = state.step(margins, torch.Generator().manual_seed(seed))
        # M0 = 0.9 * 0 + 0.1 * 10 = 1; sigma = 0.9 * 1 + 0.1 * std([0, 1, -1, 40]) (population std)
        std = math.sqrt(sum((m - 10.0) ** 2 for m in [0.0, 1.0, -1.0, 40.0]) / 4)
        assert state.margin_mean == pytest.approx(1.0) and state.margin_std == pytest.approx(0.9 + 0.1 * std)
        # 3 of 4 kept; the far pair (weight exp(-39^2 / (2 sigma^2)) ~ e^-110) is never drawn
        assert kept.tolist() == [True, True, True, False]
        assert beta == pytest.approx(0.1 * (1 + 0.6 * (0.0 - 1.0)))  # the kept pairs' mean margin is 0


def test_filter_keeps_at_least_one_pair_and_all_when_keep_is_1():
    one = DynamicBeta(0.1, 0.6, 0.9, keep=0.8)
    assert one.step(torch.tensor([3.0]))[1].tolist() == [True]  # floor(0.8 * 1) = 0 -> at least 1
    assert DynamicBeta(0.1, 0.6, 0.9, keep=1.0).step(torch.tensor([0.0, 9.0, -9.0]))[1].all()


def test_sft_term_counts_only_the_flagged_rows_tokens():
    logps = torch.tensor([[-1.0, -2.0, -3.0], [-4.0, -5.0, -7.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])  # the last token of row 1 is padding
    # row 1 only: 2 * (4 + 5) / 2 tokens
    assert sft_loss(logps, mask, torch.tensor([False, True]), 2.0).item() == pytest.approx(9.0)
    # both rows: 2 * (1 + 2 + 3 + 4 + 5) / 5 tokens (a token mean, not a mean of row means)
    assert sft_loss(logps, mask, torch.tensor([True, True]), 2.0).item() == pytest.approx(6.0)


def test_sft_term_is_zero_without_a_flagged_row_or_with_weight_0():
    logps = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    mask = torch.tensor([[1, 1]])
    assert sft_loss(logps, mask, torch.tensor([False]), 1.0).item() == 0.0
    assert sft_loss(logps, mask, torch.tensor([True]), 0.0).item() == 0.0


# --- plan and summary, nothing loaded ------------------------------------------------------------

def _pairs(*sources):
    from vault_agent.train.dataset import Pair

    return [Pair(f"p{i}", s, [{"role": "user", "content": "q"}], f"a{i}", "b") for i, s in enumerate(sources)]


def test_plan_records_the_variants_and_the_summary_says_which_run():
    from vault_agent.config import TrainSettings
    from vault_agent.train.dpo import make_plan
    from vault_agent.train.variants import SFT_SKIPPED_NO_CORRECTIONS, describe

    plan = make_plan(TrainSettings(dynamic_beta=True, source_margins={"correction": 1.0, "synthetic": 0.0}),
                     device="cpu")
    assert plan.variants["dynamic_beta"] == {"alpha": 0.6, "momentum": 0.9, "keep": 0.8}
    assert plan.variants["source_margins"] == {"correction": 1.0} and plan.variants["sft_weight"] == 1.0
    with_corrections = describe(plan.variants, _pairs("correction", "synthetic"))
    assert with_corrections["ran"] == ["dpo", "sft on corrections (weight 1)",
                                       "dynamic beta (alpha 0.6, momentum 0.9, keep 0.8)", "margins correction 1"]
    assert with_corrections["notes"] == []
    synthetic_only = describe(plan.variants, _pairs("synthetic", "synthetic"))
    assert synthetic_only["notes"] == [SFT_SKIPPED_NO_CORRECTIONS, "margins skipped: no training pairs from correction"]
    assert describe(make_plan(TrainSettings(sft_weight=0), device="cpu").variants, _pairs("correction")) == \
        {"ran": ["dpo"], "notes": []}
    ipo = describe(make_plan(TrainSettings(loss_type="ipo"), device="cpu").variants, _pairs("correction"))
    assert ipo == {"ran": ["dpo"], "notes": ["SFT term skipped: it is added to the sigmoid loss, train.loss_type is 'ipo'"]}


def test_variant_on_a_non_sigmoid_loss_is_refused_before_any_model_loads():
    from vault_agent.config import TrainSettings
    from vault_agent.errors import UserError
    from vault_agent.train.dpo import make_plan

    with pytest.raises(UserError, match="train.dynamic_beta modifies the sigmoid DPO loss"):
        make_plan(TrainSettings(dynamic_beta=True, loss_type="ipo"), device="cpu")
    with pytest.raises(UserError, match="train.source_margins"):
        make_plan(TrainSettings(source_margins={"rating": 0.5}, loss_type="hinge"), device="cpu")


def test_training_records_carry_margin_and_correction_flag():
    from vault_agent.config import TrainSettings
    from vault_agent.train.dataset import build

    ts = build(_pairs(*(["correction"] * 3 + ["synthetic"] * 3)),
               TrainSettings(heldout_fraction=0, source_margins={"correction": 1.5}))
    rows = {(r["is_correction"], r["margin"]) for r in ts.train_records()}
    assert rows == {(True, 1.5), (False, 0.0)}


# --- the trainer on the tiny random llama ---------------------------------------------------------

def _records(n: int = 4):
    from vault_agent.train.dataset import Pair

    out = []
    for i in range(n):
        p = Pair(f"p{i}", "correction" if i % 2 else "synthetic", [{"role": "user", "content": f"What is item {i}?"}],
                 f"Item {i} is a red apple.", "I don't know.")
        out.append(p.record(margin=0.5 * i))
    return out


def _trainer(tiny_llama, tmp_path, records, precompute_ref_log_probs=False, **settings):
    from vault_agent.config import TrainSettings
    from vault_agent.train.dpo import make_plan, make_trainer

    model, tokenizer = tiny_llama
    plan = make_plan(TrainSettings(batch_size=len(records), max_length=128, **settings), device="cpu")
    # every record in one micro-batch (the CPU plan would take one pair at a time)
    return make_trainer(plan, model, tokenizer, records, str(tmp_path / "t"), max_steps=1,
                        precompute_ref_log_probs=precompute_ref_log_probs,
                        per_device_train_batch_size=len(records), gradient_accumulation_steps=1)


def test_margin_and_correction_flag_survive_tokenization_and_the_collator(tiny_llama, tmp_path):
    records = _records()
    trainer = _trainer(tiny_llama, tmp_path, records, source_margins={"synthetic": 0.1})
    batch = next(iter(trainer.get_train_dataloader()))
    by_margin = dict(zip(batch["pair_margin"].tolist(), batch["pair_is_correction"].tolist()))
    assert by_margin == {r["margin"]: r["is_correction"] for r in records}  # shuffled, but row by row intact
    assert batch["input_ids"].shape[0] == 2 * len(records)  # chosen then rejected, as TRL collates


@pytest.mark.parametrize("precompute", [False, True], ids=["reference-per-batch", "reference-precomputed"])
def test_without_variants_the_loss_is_trls_own_and_the_variant_path_matches_it(tiny_llama, tmp_path, precompute):
    """sft_weight 0, no margins, no dynamic beta: TRL's _compute_loss runs. The variants path with
    margins 0 and no SFT computes the same number (same forward, same reference), also with the
    reference log-probs precomputed as the CUDA plan does."""
    records = [dict(r, margin=0.0, is_correction=False) for r in _records()]
    trainer = _trainer(tiny_llama, tmp_path, records, sft_weight=0.0, precompute_ref_log_probs=precompute)
    assert not trainer.variants_on
    model = trainer.model
    with torch.no_grad():  # move the adapter off zero so policy != reference
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.05)
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    assert ("ref_chosen_logps" in batch) == precompute
    trl_loss = trainer.compute_loss(model, dict(batch)).item()
    trl_margin = trainer._metrics["train"]["rewards/margins"][-1]
    trainer.variants_on = True
    ours = trainer.compute_loss(model, dict(batch)).item()
    assert ours == pytest.approx(trl_loss, rel=1e-5) and trl_loss != pytest.approx(math.log(2), abs=1e-4)
    assert trainer._metrics["train"]["rewards/margins"][-1] == pytest.approx(trl_margin, rel=1e-5)
    # and a margin on every pair raises it, as the formula says
    trainer.use_margins = True
    shifted = trainer.compute_loss(model, {**batch, "pair_margin": torch.ones(len(records))}).item()
    assert shifted > ours


@pytest.mark.slow
@pytest.mark.parametrize("variant, env, logged", [
    ("sft", {}, ["sft_loss"]),
    ("dynamic_beta", {"DYNAMIC_BETA": "true", "SFT_WEIGHT": "0"}, ["beta", "dynamic_beta/kept"]),
    ("margins", {"SOURCE_MARGINS": '{"synthetic": 0.5, "correction": 1.0}', "SFT_WEIGHT": "0"}, ["dpo_loss"]),
])
def test_each_variant_trains_and_logs_finite_figures(agent_home, tiny_base, monkeypatch, variant, env, logged):
    seed_pairs = test_train.seed_pairs
    from vault_agent.config import load_settings
    from vault_agent.paths import app_dirs
    from vault_agent.train.retrain import retrain

    # nothing held out and 2 steps of 8 rows cover the 15 weighted rows: the correction always trains
    for key, value in {"HELDOUT_FRACTION": "0", "BATCH_SIZE": "8", **env}.items():
        monkeypatch.setenv(f"VAULT_AGENT_TRAIN__{key}", value)
    seed_pairs(agent_home / "data" / "preferences.sqlite").close()
    out = retrain(load_settings(), app_dirs().ensure(), device="cpu", trainer_overrides={"max_steps": 2})
    assert out.version == "v0001" and out.steps == 2
    assert len(out.variants["ran"]) == 2 and out.variants["ran"][1].startswith(
        {"sft": "sft on corrections", "dynamic_beta": "dynamic beta", "margins": "margins"}[variant])
    vdir = agent_home / "data" / "adapters" / "v0001"
    metrics = json.loads((vdir / "metrics.json").read_text())
    steps = [h for h in metrics["history"] if "loss" in h]
    assert len(steps) == 2
    for key in logged + ["loss", "rewards/margins", "logps/chosen"]:
        assert all(math.isfinite(h[key]) for h in steps), key
    if variant == "dynamic_beta":
        assert all(0 < h["beta"] for h in steps) and all(0 < h["dynamic_beta/kept"] <= 1 for h in steps)
    if variant == "sft":
        assert any(h["sft_loss"] > 0 for h in steps)
    assert f'"{logged[0]}"' in (vdir / "train.log").read_text()
    variants = json.loads((vdir / "config.json").read_text())["plan"]["variants"]
    assert (variants["dynamic_beta"] is not None) == (variant == "dynamic_beta")


def test_dry_run_says_the_sft_term_is_skipped_without_corrections(agent_home, tiny_base):
    cli, rag_prompt = test_train.cli, test_train.rag_prompt
    from vault_agent.feedback.store import PreferenceLog

    with PreferenceLog(agent_home / "data" / "preferences.sqlite") as log:
        for i, fact in enumerate(test_train.FACTS):
            log.add_synthetic_pair(rag_prompt(i, fact), f"{fact} [1]", "I don't know.", origin_id=f"c{i}:h")
    run = cli("retrain", "--dry-run")
    assert run.returncode == 0, run.stderr
    assert "loss: dpo\n" in run.stdout.replace("\r", "")
    assert "SFT term skipped: no correction pairs among the training pairs" in run.stdout
    from vault_agent.config import load_settings
    from vault_agent.paths import app_dirs
    from vault_agent.train.retrain import retrain
    from vault_agent.train.variants import SFT_SKIPPED_NO_CORRECTIONS

    out = retrain(load_settings(), app_dirs().ensure(), dry_run=True)
    assert out.variants == {"ran": ["dpo"], "notes": [SFT_SKIPPED_NO_CORRECTIONS]}
