"""The gate's answer-level check (train/answer_check.py): probes made from held-out synthetic pairs,
answers scored for the source chunk's key facts and for citing the source note, and a candidate
refused when either drops beyond noise. The real answering through llama.cpp is in
test_train_real.py (a real retrain's gate.json) and in the slow test at the end."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from vault_agent.llm.prompts import build_rag_messages
from vault_agent.train import answer_check, gate
from vault_agent.train.dataset import Pair

HERON = ("The Project Heron production cutover is scheduled for 2026-04-18 at 06:00 UTC. Dana Whitfield owns "
         "the runbook; rollback takes about 40 minutes and needs the Postgres snapshot taken the night before.")


@dataclass
class Row:  # the catalog's ChunkRow, as far as probes read it
    path: str
    heading: str
    text: str


def heron_pair(pair_id="p1", source="synthetic", origin="chunk-heron:abcd"):
    contexts = [{"n": 1, "note": "Garden/Tomatoes.md", "heading": "Tomatoes > Watering", "text": "Water twice a week."},
                {"n": 2, "note": "Projects/Project Heron.md", "heading": "Project Heron > Cutover", "text": HERON}]
    prompt = build_rag_messages("When is the Heron cutover?", contexts)
    return Pair(pair_id, source, prompt, "It is on 2026-04-18 [2].", "I don't know.", origin_id=origin)


def test_key_terms_are_the_notes_facts_not_the_questions_words():
    terms = answer_check.key_terms(HERON, "When is the Project Heron cutover?")
    assert {"2026-04-18", "40", "Whitfield", "Postgres"} <= set(terms)
    assert not {"Heron", "cutover", "Project", "the", "about"} & set(terms)
    assert len(terms) <= answer_check.KEY_TERMS
    assert answer_check.key_terms("> [!tip] Keep the Postgres snapshot.", "x") == ["Postgres", "snapshot"]
    # sentence-initial capitals are not names, lone digits and generic words are not facts
    assert answer_check.key_terms("Everything runs. Turn it 3 times at Larkspur.", "x") == ["Larkspur"]


def test_a_probe_knows_its_question_source_note_and_its_number_in_the_prompt():
    chunks = {"chunk-heron": Row("Projects/Project Heron.md", "Project Heron > Cutover", HERON)}
    pairs = [heron_pair(), heron_pair("p2", source="correction"), heron_pair("p3", origin="gone:ffff")]
    probes = answer_check.probes_from_pairs(pairs, chunks, limit=12)
    assert [p.pair_id for p in probes] == ["p1"]  # corrections and chunks no longer indexed are not probes
    probe = probes[0]
    assert probe.question == "When is the Heron cutover?"
    assert probe.source_note == "Projects/Project Heron.md" and probe.source_ns == [2]
    assert len(answer_check.probes_from_pairs([heron_pair(f"p{i}") for i in range(5)], chunks, limit=3)) == 3


def test_a_kto_versions_heldout_answers_give_one_probe_per_pair():
    """KTO holds out single answers, both halves of a synthetic pair: the check asks its question once."""
    from vault_agent.train.examples import split_pair

    chunks = {"chunk-heron": Row("Projects/Project Heron.md", "Project Heron > Cutover", HERON)}
    examples = [e for i in range(3) for e in split_pair(heron_pair(f"p{i}"))]
    probes = answer_check.probes_from_pairs(examples, chunks, limit=12)
    assert [p.pair_id for p in probes] == ["p0", "p1", "p2"]
    assert probes[0].question == "When is the Heron cutover?" and probes[0].source_ns == [2]


def test_answers_are_scored_for_key_facts_and_for_citing_the_source():
    chunks = {"chunk-heron": Row("Projects/Project Heron.md", "Project Heron > Cutover", HERON)}
    probe = answer_check.probes_from_pairs([heron_pair()], chunks, limit=1)[0]
    good = "The cutover is on 2026-04-18; Dana Whitfield owns the runbook and the Postgres snapshot [2]."
    wrong_note = "The cutover is on 2026-04-18 [1]."
    scores = answer_check.score_answers([probe] * 3, [good, wrong_note, "No idea."], "v1")
    assert scores.cited == [1.0, 0.0, 0.0]
    assert scores.coverage[0] > scores.coverage[1] > scores.coverage[2] == 0.0


def scores(label, coverage, cited):
    return answer_check.AnswerScores(label, list(coverage), list(cited))


def test_a_candidate_that_cites_the_source_less_often_is_refused_even_when_it_wins_the_pairs():
    """The case from the issue: v0001 won the held-out pairs, but its answers cited the note the
    question was about 17 times in 26 where the base did 22 times."""
    active = scores(None, [0.26] * 26, [1.0] * 22 + [0.0] * 4)
    candidate = scores("v0001", [0.36] * 26, [1.0] * 17 + [0.0] * 9)
    check = answer_check.compare(candidate, active)
    assert check.citation_change.high < 0 and len(check.shortfalls) == 1
    margins = [0.5, 0.4, 0.6, 0.3, 0.5, 0.45, 0.55, 0.35, 0.5, 0.4]
    cand = gate.Scores.from_margins("v0001", margins)
    act = gate.Scores.from_margins(None, [m - 0.4 for m in margins])
    assert gate.decide(cand, act).promote  # the pairs alone would promote it
    verdict = gate.decide(cand, act, answers=check)
    assert not verdict.promote
    assert any("cite the source note less often" in r for r in verdict.reasons)
    assert verdict.to_dict()["answers"]["candidate"]["cites_source"] == round(17 / 26, 3)


def test_a_small_wobble_in_answers_is_noise_not_a_reason_to_refuse():
    active = scores(None, [0.5, 0.25, 0.5, 0.75, 0.5, 0.25, 0.5, 0.5], [1, 1, 0, 1, 1, 0, 1, 1])
    candidate = scores("v2", [0.5, 0.5, 0.25, 0.75, 0.5, 0.25, 0.5, 0.25], [1, 0, 1, 1, 1, 0, 1, 1])
    check = answer_check.compare(candidate, active)
    assert check.shortfalls == []
    assert "unseen questions" in check.line()


@pytest.mark.slow
def test_the_same_weights_answer_the_same_through_llama_cpp_and_pass_the_check(tmp_path):
    """Greedy answers through the serving backend: the base against itself gives identical answers
    (so any difference the gate sees between two adapters comes from their weights)."""
    from vault_agent.config import LLMSettings

    chunks = {"chunk-heron": Row("Projects/Project Heron.md", "Project Heron > Cutover", HERON)}
    probes = answer_check.probes_from_pairs([heron_pair()], chunks, limit=1)
    first, second = answer_check.answer_probes(LLMSettings(), [(None, None), ("again", None)], probes, max_tokens=24)
    assert first.answers == second.answers and first.answers[0].strip()
    assert answer_check.compare(second, first).shortfalls == []
