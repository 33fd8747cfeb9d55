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


def test_adapters_list_shows_the_interval_and_why_a_version_was_kept_as_a_candidate(agent_home):
    """A version refused for thin evidence stays listed, says why, and can still be activated by hand."""
    import json

    from typer.testing import CliRunner

    from vault_agent.cli.adapters import adapters_app
    from vault_agent.paths import app_dirs
    from vault_agent.train import active, registry
    from vault_agent.train.gate import Scores, decide, write_verdict

    dirs = app_dirs()
    vdir = registry.adapters_dir(dirs) / "v0001"
    vdir.mkdir(parents=True)
    (vdir / "metrics.json").write_text(json.dumps({"pairs": {"train": 12}}))
    (vdir / active.GGUF_NAME).write_bytes(b"GGUF")
    write_verdict(vdir, decide(Scores.from_margins("v0001", [-2.50, -2.594]), Scores.from_margins(None, [-2.57, -2.65])))
    runner = CliRunner()
    listed = runner.invoke(adapters_app, ["list"])
    assert listed.exit_code == 0, listed.output
    assert "refused" in listed.output and "margin gain +0.063 (95% +0.056 to +0.070)" in listed.output
    assert "kept as a candidate" in listed.output and "only 2 held-out pairs, 8 needed" in listed.output
    as_json = json.loads(runner.invoke(adapters_app, ["list", "--json"]).output)
    assert as_json["versions"][0]["gate"]["evidence"]["enough"] is False
    assert runner.invoke(adapters_app, ["activate", "v0001"]).exit_code == 0
    assert active.read_state(dirs)[0].active == "v0001"
