"""The shared sampling rules (train/sampling.py), the methods' one interface (train/strategies.py),
the log's read side (feedback/reader.py) and the retrain result's JSON (no model loads here)."""

from __future__ import annotations

from pathlib import Path

from conftest import record_response
from vault_agent.feedback.store import PreferenceLog
from vault_agent.train import sampling


def test_dedupe_keeps_the_most_trusted_in_first_seen_order():
    items = [("a", "synthetic", 1), ("b", "rating", 2), ("a", "correction", 3), ("a", "correction", 4)]
    trust = {"synthetic": 0.5, "rating": 1.0, "correction": 2.0}
    kept = sampling.dedupe(items, key=lambda i: i[0], trust=lambda i: trust[i[1]])
    assert kept == [("b", "rating", 2), ("a", "correction", 3)]  # the first among equals wins


def test_split_holds_out_whole_groups_stably_and_never_none_of_two_or_more():
    items = [(f"g{i % 5}", i) for i in range(20)]
    train, held = sampling.split(items, group=lambda i: i[0], fraction=0.4)
    assert sampling.split(items, group=lambda i: i[0], fraction=0.4) == (train, held)
    assert {g for g, _ in held} == {g for g in {g for g, _ in items} if sampling.bucket(g) < 0.4}
    assert not {g for g, _ in held} & {g for g, _ in train}
    _, lowest = sampling.split(items, group=lambda i: i[0], fraction=1e-12)
    assert {g for g, _ in lowest} == {min({g for g, _ in items}, key=sampling.bucket)}
    assert sampling.split(items, group=lambda i: i[0], fraction=0.0)[1] == []


def test_repeat_by_weight_repeats_a_stable_share_for_fractions():
    ids = [f"p{i}" for i in range(400)]
    rows = sampling.repeat_by_weight(ids, row_id=lambda i: i, weight=lambda i: 1.5)
    assert rows == sampling.repeat_by_weight(ids, row_id=lambda i: i, weight=lambda i: 1.5)
    assert 540 < len(rows) < 660 and set(rows) == set(ids)
    assert sampling.repeat_by_weight(ids, row_id=lambda i: i, weight=lambda i: 0.0) == []


def test_both_methods_implement_the_whole_interface(agent_home):
    from vault_agent.config import TrainSettings
    from vault_agent.train.strategies import DPO, KTO, TrainingMethod, load

    methods = load(agent_home / "data" / "preferences.sqlite", TrainSettings())  # no log yet: empty sets
    assert isinstance(methods["dpo"], DPO) and isinstance(methods["kto"], KTO)
    for name, method in methods.items():
        assert isinstance(method, TrainingMethod) and method.name == name
        assert not type(method).__abstractmethods__
        assert method.trained_ids() == [] and method.gate_inputs() == []


def test_the_reader_finds_pairs_and_live_thumbs_and_reads_a_missing_log_as_empty(tmp_path: Path):
    from vault_agent.feedback import reader

    db = tmp_path / "log.sqlite"
    assert reader.pair_rows(db) == [] and reader.thumb_rows(db) == []
    with PreferenceLog(db) as log:
        log.rate(record_response(log, "Q?", "good"), 1)
        log.rate(record_response(log, "Q?", "bad"), -1)  # the two make a rating pair
        alone = log.rate(record_response(log, "Other?", "fine"), 1)
        log.undo_rating(log.rate(record_response(log, "Third?", "meh"), -1)["id"])
    assert [r["source"] for r in reader.pair_rows(db)] == ["rating"]
    assert [r["id"] for r in reader.thumb_rows(db)] == [alone["id"]]  # paired and undone thumbs are not read


def test_the_result_json_has_the_five_fixed_keys_and_only_what_was_set():
    from vault_agent.train.retrain import RetrainResult

    r = RetrainResult(pairs={"train": 0}, examples={"train": 0}, corrupt_pairs=[], due=False, reason="r",
                      seconds=0.0)
    assert r.to_dict() == {"version": None, "pairs": {"train": 0}, "heldout": None, "seconds": 0.0,
                           "corrupt_pairs": [], "examples": {"train": 0}, "due": False, "reason": "r"}
