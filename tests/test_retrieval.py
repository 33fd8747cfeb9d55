"""Ranking on cases people hit in their own vaults: an exact code name among near-identical sections,
a concept named only by a note's title or alias, and the evaluation script's smoke run.
Real embedding model, real chromadb, real SQLite FTS5; no chat model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from vault_agent.index.search import RankOptions, search

REPO = Path(__file__).resolve().parent.parent

CODES = ["Zorvane", "Quillmark", "Bexaloo", "Trindlewick", "Maskovar"]

PROTOCOLS = "# Protocol Registry\n\nInternal protocols are registered here by code name.\n\n" + "".join(
    f"## Protocol {i}\nThe {code} protocol governs tea ceremonies. Owner: platform team. Reviewed every quarter.\n\n"
    for i, code in enumerate(CODES, 1)
)
# Neighbours that share the vocabulary, so "protocol" and "govern" alone decide nothing.
OTHERS = {
    "Handbook/Meetings.md": "# Meetings\n\nThe meeting protocol governs who speaks first. Tea is served at ten.\n",
    "Handbook/Ceremonies.md": "# Ceremonies\n\nTea ceremonies follow the house protocol: green tea, no phones.\n",
    "Concepts/Backpressure.md": "---\naliases: [Load shedding]\n---\n# Backpressure\n\nWhen workers drain a queue "
    "more slowly than producers fill it, the broker refuses new publishes with 429 until the depth falls.\n",
    "Concepts/Leases.md": "# Leases\n\nA worker holds a job for thirty seconds; if it does not answer in time, "
    "the job goes back to the queue for another worker.\n",
    "Ops/Capacity.md": "# Capacity\n\nEach waiting job costs about a kilobyte of memory. Shed load early by "
    "scaling workers before the queue fills; measure memory headroom first.\n",
}


@pytest.fixture
def registry_index(make_vault, open_index):
    ix = open_index(make_vault({"Internals/Protocol Registry.md": PROTOCOLS, **OTHERS}))
    ix.reconcile()
    return ix


@pytest.mark.slow
@pytest.mark.real_embedder  # ranking quality is the real model's
@pytest.mark.parametrize("code", CODES)
def test_exact_code_name_returns_its_own_section_first(registry_index, code):
    hits = search(registry_index, f"What does the {code} protocol govern?", 5)
    assert hits[0].path == "Internals/Protocol Registry.md"
    assert f"The {code} protocol" in hits[0].text
    assert not any(f"The {other} protocol" in hits[0].text for other in CODES if other != code)


@pytest.mark.slow
@pytest.mark.real_embedder  # ranking quality is the real model's
def test_code_name_alone_finds_its_section(registry_index):
    for code in CODES:
        assert f"The {code} protocol" in search(registry_index, code, 1)[0].text


OFFSITE = (
    "# Offsite\n\n## Tea etiquette\nAt the offsite, tea ceremonies follow strict etiquette: bow, pour for the "
    "others first, never refill your own cup, and keep phones away during the ceremony.\n\n"
    "## Budget codes\nZorvane is the code for the spring offsite budget line.\n"
)


@pytest.mark.slow
@pytest.mark.real_embedder  # ranking quality is the real model's
def test_code_name_beats_passages_that_match_the_rest_of_the_query(make_vault, open_index):
    """Plain fusion answers with the tea-etiquette text (dense and BM25 both like it, without the code
    name); the user typed the code name, so the passage holding it comes first."""
    ix = open_index(make_vault({"Offsite.md": OFFSITE, **OTHERS}))
    ix.reconcile()
    query = "Zorvane tea ceremony etiquette"
    plain = search(ix, query, 1, options=RankOptions(rare_bonus=0.0, best_passage=False))[0]
    assert "Zorvane" not in plain.text  # the case this fixture exists for
    shown = search(ix, query, 1)[0]
    assert shown.path == "Offsite.md" and "Zorvane" in shown.text


@pytest.mark.slow
@pytest.mark.real_embedder  # ranking quality is the real model's
def test_alias_names_the_concept_the_body_never_uses(registry_index):
    hits = search(registry_index, "How does load shedding work?", 3)
    assert hits[0].path == "Concepts/Backpressure.md"


@pytest.mark.slow
@pytest.mark.real_embedder  # ranking quality is the real model's
def test_title_names_the_concept(registry_index):
    assert search(registry_index, "explain leases", 3)[0].path == "Concepts/Leases.md"


@pytest.mark.slow
@pytest.mark.real_embedder  # ranking quality is the real model's
def test_per_note_passages_keep_their_note_together_and_distinct(registry_index):
    hits = search(registry_index, "Bexaloo protocol", 5, per_note=2)
    registry = [h for h in hits if h.path == "Internals/Protocol Registry.md"]
    assert len(registry) == 2 and len({h.chunk_id for h in registry}) == 2
    assert "The Bexaloo protocol" in registry[0].text


@pytest.mark.slow  # the script loads the real embedding model
def test_retrieval_eval_smoke(tmp_path, agent_home):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import retrieval_eval
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    out = tmp_path / "eval.json"
    report = retrieval_eval.main(["--smoke", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(report))
    vault = saved["vaults"]["eval"]
    assert vault["questions"] == 4  # one of each kind
    for ranker in ("naive_1000char_dense", "ours"):
        assert set(vault[ranker]) >= {"hit@1", "recall@5", "mrr", "latency", "by_kind"}
        assert 0.0 <= vault[ranker]["mrr"] <= 1.0
    assert vault["ours"]["by_kind"]["exact"]["hit@1"] == 1.0


def test_only_words_written_as_names_count_as_rare_names():
    from vault_agent.index.search import written_as_name

    known = frozenset({"put", "get", "enqueue", "priya"})
    assert written_as_name("zorvane", ["The Zorvane protocol governs tea ceremonies."], known)
    assert written_as_name("zorvane", ["Zorvane is the code for the budget line."], known)  # unknown, always capital
    assert written_as_name("priya", ["Weekly 1-1 with Priya on Tuesdays."], known)
    assert written_as_name("4471", ["See incident 4471."], known)
    assert not written_as_name("enqueue", ["A known key enqueues nothing."], known)
    assert not written_as_name("put", ["Put a reference in the payload."], known)  # sentence start only
    assert not written_as_name("get", ["| GET | `/v1/queues/{q}/stats` |"], known)  # a table cell starts it
