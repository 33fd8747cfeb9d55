"""`vault-agent eval`: the metric functions on hand-made answers, the question file's errors, and one
real run (real index, real bundled model) on the sample vault."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from vault_agent.errors import UserError
from vault_agent.evaluate import (
    cites_explicitly,
    fact_coverage,
    facts_found,
    load_questions,
    recall_at_k,
    summarize,
    table_rows,
)

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "benchmarks" / "questions" / "sample_vault.jsonl"


# --- metrics ---------------------------------------------------------------------------------------

def test_fact_group_is_covered_by_any_alternative_case_insensitively():
    facts = [["June 1", "1 June"], ["Staff Engineer"], ["Priya"]]
    answer = "Your promo packet for STAFF engineer is due 1 june [1]."
    assert facts_found(answer, facts) == [True, True, False]
    assert fact_coverage(answer, facts) == pytest.approx(2 / 3)


def test_markdown_emphasis_and_line_breaks_do_not_hide_a_fact():
    assert facts_found("Planted **42** cloves of\n'Music'", [["42 cloves"], ["music"]]) == [True, True]


def test_a_number_is_not_found_inside_a_longer_number():
    assert facts_found("It reached 163 °C, then 7.5", [["63 °C"], ["7"], ["7.5"]]) == [False, False, True]
    assert facts_found("about 63 °C.", [["63 °C"]]) == [True]


def test_no_facts_means_no_coverage_figure_rather_than_zero():
    assert fact_coverage("anything", []) is None


def test_recall_at_5_counts_distinct_notes_in_rank_order():
    # six chunks, five distinct notes: B.md's second chunk must not push E.md out of the top 5
    retrieved = ["A.md", "B.md", "B.md", "C.md", "D.md", "E.md", "F.md"]
    assert recall_at_k(retrieved, ["E.md"]) == 1.0
    assert recall_at_k(retrieved, ["F.md"]) == 0.0
    assert recall_at_k(retrieved, ["A.md", "F.md"]) == 0.5
    assert recall_at_k(retrieved, ["A.md", "F.md"], k=6) == 1.0
    assert recall_at_k(retrieved, []) is None


def test_explicit_citation_needs_every_citation_marked_explicit():
    assert cites_explicitly([{"path": "A.md", "explicit": True}])
    assert not cites_explicitly([{"path": "A.md", "explicit": False}, {"path": "B.md", "explicit": False}])
    assert not cites_explicitly([])


def test_summary_and_table_put_adapters_side_by_side():
    def row(cov, explicit, words, ms):
        return {"fact_coverage": cov, "explicit_citation": explicit, "words": words, "tokens": words * 2,
                "latency_ms": ms}

    base = summarize([row(0.5, True, 10, 100.0), row(None, False, 30, 300.0)])
    assert base["fact_coverage"] == 0.5  # a question without facts is left out, not counted as 0
    assert base["explicit_citation_rate"] == 0.5 and base["mean_words"] == 20 and base["latency_ms_p50"] == 200
    tuned = summarize([row(1.0, True, 12, 150.0)])
    report = {"adapters": ["none", "v0002"], "summary": {"none": {**base, "recall_at_5": 0.75},
                                                        "v0002": {**tuned, "recall_at_5": 0.75}}}
    rows = {r[0]: r[1:] for r in table_rows(report)}
    assert rows["fact coverage"] == ["0.50", "1.00"]
    assert rows["retrieval recall@5"] == ["0.75", "0.75"]


def test_table_has_one_column_per_adapter(capsys):
    from vault_agent.cli.eval import print_table

    figures = {"questions": 1, "fact_coverage": 0.25, "explicit_citation_rate": 0.0, "mean_words": 40,
               "mean_tokens": 65, "latency_ms_mean": 900, "latency_ms_p50": 800, "recall_at_5": 1.0}
    print_table({"question_file": "q.jsonl", "questions": [{}], "model": "m.gguf", "adapters": ["none", "v0002"],
                  "summary": {"none": figures, "v0002": {**figures, "fact_coverage": 0.5}}})
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if "metric" in line)
    assert "none" in header and "v0002" in header
    coverage = next(line for line in lines if "fact coverage" in line)
    assert "0.25" in coverage and "0.50" in coverage


# --- the question file -----------------------------------------------------------------------------

def test_shipped_question_file_loads_and_names_real_notes():
    questions = load_questions(SHIPPED)
    assert len(questions) >= 10
    for q in questions:
        assert q.facts, q.question
        for note in q.expected_notes:
            assert (REPO / "sample_vault" / note).is_file(), note


def test_shipped_facts_appear_in_their_expected_notes():
    """Every fact group has at least one alternative that the expected notes really contain."""
    for q in load_questions(SHIPPED):
        notes = " ".join((REPO / "sample_vault" / n).read_text(encoding="utf-8") for n in q.expected_notes)
        assert all(facts_found(notes, q.facts)), (q.question, q.facts, facts_found(notes, q.facts))


@pytest.mark.parametrize("line, why", [
    ("{not json", "not valid JSON"),
    ('["a list"]', "expected a JSON object"),
    ('{"expected_notes": ["A.md"]}', '"question" must be a non-empty string'),
    ('{"question": "q", "facts": [["ok"], [1]]}', '"facts" group 2 must be a list of non-empty strings'),
    ('{"question": "q", "facts": [[]]}', '"facts" has an empty group'),
    ('{"question": "q", "expected_notes": "A.md"}', '"expected_notes" must be a list'),
])
def test_bad_line_names_its_number(tmp_path, line, why):
    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "fine", "facts": [["x"]]}\n\n' + line + "\n")
    with pytest.raises(UserError) as e:
        load_questions(path)
    assert f"line 3: {why}" in str(e.value)


def run_cli(*args, home, **env):
    full_env = {**os.environ, "VAULT_AGENT_HOME": str(home), "PYTHONPATH": str(REPO), **env}
    return subprocess.run([sys.executable, "-m", "vault_agent.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=600)


def test_malformed_line_is_a_one_line_error_exit_2(tmp_path, agent_home):
    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "When is the dentist?", "facts": [["April 22"]]}\n{"question": \n')
    out = run_cli("eval", "--questions", str(path), "--vault", str(REPO / "sample_vault"), home=agent_home)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr
    assert "line 2: not valid JSON" in out.stderr


def test_unknown_adapter_version_is_a_one_line_error(tmp_path, agent_home):
    out = run_cli("eval", "--questions", str(SHIPPED), "--adapter", "v0099", home=agent_home)
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0
    assert "no adapter version 'v0099'" in out.stderr


def test_two_adapters_side_by_side_on_the_real_index_with_a_fake_model(sample_vault_copy, open_index):
    """Fake model (no llama.cpp generation needed to check the plumbing): each column is answered with
    its own adapter, retrieval is shared, and nothing reaches the preference log."""
    from vault_agent.evaluate import Question, resolve_adapter, run_eval
    from vault_agent.llm.fake import FakeBackend
    from vault_agent.paths import app_dirs
    from vault_agent.train import active

    dirs = app_dirs().ensure()
    active.gguf_path(dirs, "v0001").parent.mkdir(parents=True)
    active.gguf_path(dirs, "v0001").write_bytes(b"fake")  # the fake backend does not read it
    active.write_state(dirs, active.ActiveState("v0001"))
    ix = open_index(sample_vault_copy)
    ix.reconcile()
    questions = [Question("When is my dentist appointment?", ["Inbox.md"], [["your notes"], ["dentist"]], 1)]
    choices = [resolve_adapter("none", dirs), resolve_adapter("active", dirs)]
    report = run_eval(ix, FakeBackend(), ix.settings, questions, choices)
    assert report["adapters"] == ["none", "active (v0001)"]
    answers = report["questions"][0]["answers"]
    assert answers["none"]["adapter_version"] is None and answers["active (v0001)"]["adapter_version"] == "v0001"
    # the fake answer starts "From your notes [1]:": one fact found, cited explicitly
    assert answers["none"]["fact_coverage"] == 0.5 and answers["none"]["explicit_citation"]
    assert report["summary"]["none"]["recall_at_5"] == report["questions"][0]["recall_at_5"] == 1.0
    assert not dirs.preference_db.exists()


# --- a real run --------------------------------------------------------------------------------------

@pytest.mark.slow
def test_eval_on_the_sample_vault_without_adapter(tmp_path, agent_home, sample_vault_copy):
    questions = [
        {"question": "When is my dentist appointment?", "expected_notes": ["Inbox.md"],
         "facts": [["2026-04-22", "April 22"], ["3:15"]]},
        # one expected note that exists and one that does not: recall can be at most 1/2
        {"question": "How many garlic cloves did I plant, and which variety?",
         "expected_notes": ["Garden/Vegetable Garden.md", "Garden/No Such Note.md"], "facts": [["42"], ["Music"]]},
    ]
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in questions))
    # two columns: no adapter, and the active choice (none saved yet, so also the base model)
    out = run_cli("eval", "--questions", str(path), "--vault", str(sample_vault_copy), "--adapter", "none",
                  "--adapter", "active", "--json",
                  home=agent_home, VAULT_AGENT_LLM__MAX_TOKENS="40", VAULT_AGENT_LLM__CONTEXT_CHUNKS="3")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["adapters"] == ["none", "active (none)"]
    # temperature 0 and a fixed seed: the same model answers the same prompt identically
    for q in report["questions"]:
        assert q["answers"]["none"]["answer"] == q["answers"]["active (none)"]["answer"]
    summary = report["summary"]["none"]
    assert set(summary) >= {"recall_at_5", "fact_coverage", "explicit_citation_rate", "mean_words", "mean_tokens",
                            "latency_ms_mean", "latency_ms_p50", "questions"}
    dentist, garlic = report["questions"]
    assert "Inbox.md" in dentist["retrieved_notes"] and dentist["recall_at_5"] == 1.0
    assert "Garden/Vegetable Garden.md" in garlic["retrieved_notes"] and garlic["recall_at_5"] == 0.5
    assert summary["recall_at_5"] == 0.75
    assert report["warnings"] == ["expected note not in the index: Garden/No Such Note.md"]
    for q, spec in zip(report["questions"], questions):
        answer = q["answers"]["none"]
        assert answer["answer"] and answer["tokens"] > 0 and answer["latency_ms"] > 0
        # the coverage figure agrees with the answer text it was computed from
        assert answer["fact_coverage"] == fact_coverage(answer["answer"], spec["facts"])
    # eval answers never reach the preference log (the rating queue)
    db = agent_home / "data" / "preferences.sqlite"
    if db.exists():
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT count(*) FROM responses").fetchone()[0] == 0
