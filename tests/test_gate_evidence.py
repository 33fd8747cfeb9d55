"""The gate's evidence test: a candidate is promoted on enough held-out pairs, a high enough
accuracy and a margin gain clearly above noise, not on any change at all."""

import random

from vault_agent.train.evidence import paired_interval, weigh


def test_the_two_pair_promotion_from_the_field_is_refused_with_every_reason():
    # seen: 2 held-out pairs, accuracy 0.00 vs 0.00, margin -2.547 vs -2.610 promoted v0001
    ev = weigh([-2.50, -2.594], [-2.57, -2.65], min_pairs=8, min_accuracy=0.7)
    assert not ev.enough
    text = " | ".join(ev.shortfalls)
    assert "only 2 held-out pairs, 8 needed" in text and "accuracy 0.00 is below 0.70" in text


def test_a_consistent_gain_on_enough_pairs_is_evidence():
    rng = random.Random(1)
    active = [rng.uniform(-1.0, 0.5) for _ in range(20)]
    candidate = [a + 0.6 + rng.uniform(-0.2, 0.2) for a in active]
    ev = weigh(candidate, active, min_pairs=8, min_accuracy=0.7)
    assert ev.enough, ev.shortfalls
    assert 0.4 < ev.margin_gain.low < ev.margin_gain.mean < ev.margin_gain.high < 0.8


def test_a_gain_lost_in_the_pair_to_pair_noise_is_not():
    rng = random.Random(2)
    active = [rng.uniform(0.2, 1.0) for _ in range(12)]  # accuracy already 1.0
    candidate = [a + rng.uniform(-1.0, 1.1) for a in active]  # mean gain small beside the spread
    ev = weigh(candidate, active, min_pairs=8, min_accuracy=0.5)
    gain = ev.margin_gain
    assert gain.low < 0 < gain.high
    assert any("not clearly above 0" in s for s in ev.shortfalls)


def test_a_candidate_below_the_active_adapters_accuracy_is_refused():
    active = [0.5] * 9 + [-0.1]          # 0.9
    candidate = [2.0] * 8 + [-0.1] * 2   # 0.8, yet a large mean gain
    ev = weigh(candidate, active, min_pairs=8, min_accuracy=0.7)
    assert ev.shortfalls == ("held-out accuracy 0.80 is below the active adapter's 0.90",)


def test_the_interval_is_the_same_on_every_run_and_narrows_with_more_pairs():
    rng = random.Random(3)
    diffs = [rng.gauss(0.3, 0.5) for _ in range(200)]
    few = paired_interval(diffs[:10], [0.0] * 10)
    assert few == paired_interval(diffs[:10], [0.0] * 10)
    many = paired_interval(diffs, [0.0] * 200)
    assert (many.high - many.low) < (few.high - few.low) / 2
