"""The index against the real chromadb on temp vaults: the hashing embedder, except where the
test is about what the real embedding model finds (a paraphrase)."""

from __future__ import annotations

import os

import pytest

from vault_agent.index.search import search

NOTES = {
    "Garden/Vegetables.md": "# Vegetables\n\n## Tomatoes\n\nWater the tomato plants deeply twice a week, "
    "about 2.5 cm each time. Mulch keeps the soil moist.\n\n## Peppers\n\nPeppers like heat; "
    "start seeds indoors in February.\n",
    "Recipes/Sourdough.md": "# Sourdough\n\nThe starter is fed flour and water in equal weights every "
    "morning. Bake at 250 C in a dutch oven.\n",
    "Work/Heron.md": "# Project Heron\n\nMigrate the billing database from Postgres 12 to 16. "
    "Cutover is planned for April 18.\n",
}


def paths(hits):
    return [h.path for h in hits]


@pytest.mark.slow
@pytest.mark.real_embedder  # a paraphrase shares no word with the note: only the real model finds it
def test_search_finds_note_for_paraphrased_question(make_vault, open_index):
    ix = open_index(make_vault(NOTES))
    ix.reconcile()
    assert paths(search(ix, "how often should I irrigate my tomatoes?", 3))[0] == "Garden/Vegetables.md"
    assert paths(search(ix, "when do we switch the invoicing DB to the new version?", 3))[0] == "Work/Heron.md"
    hit = search(ix, "bread leaven feeding", 1)[0]
    assert hit.link == "[[Recipes/Sourdough#Sourdough]]"


def test_edit_makes_new_text_searchable_and_old_text_gone(make_vault, open_index):
    vault = make_vault(NOTES)
    ix = open_index(vault)
    ix.reconcile()
    note = vault / "Recipes/Sourdough.md"
    note.write_text("# Sourdough\n\nGerald the starter now lives in the fridge and is fed on Sundays.\n")
    report = ix.reconcile()
    assert report.indexed == 1 and report.unchanged == 2
    hits = search(ix, "Gerald fridge Sundays", 3)
    assert "Gerald" in hits[0].text
    all_text = " ".join(r.text for r in ix.catalog.chunks_by_id(sorted(ix.catalog.all_chunk_ids())).values())
    assert "dutch oven" not in all_text
    assert ix.vectors.all_ids() == ix.catalog.all_chunk_ids()  # no stale vectors


def test_rename_and_delete_leave_no_stale_chunks(make_vault, open_index):
    vault = make_vault(NOTES)
    ix = open_index(vault)
    ix.reconcile()
    os.rename(vault / "Work/Heron.md", vault / "Work/Heron Migration.md")
    (vault / "Garden/Vegetables.md").unlink()
    report = ix.reconcile()
    assert report.removed == 2 and report.indexed == 1
    indexed = {r.path for r in ix.catalog.chunks_by_id(sorted(ix.catalog.all_chunk_ids())).values()}
    assert indexed == {"Recipes/Sourdough.md", "Work/Heron Migration.md"}
    assert ix.vectors.all_ids() == ix.catalog.all_chunk_ids()
    assert "Garden/Vegetables.md" not in paths(search(ix, "tomato watering", 5))


def test_restart_on_unchanged_vault_embeds_nothing(make_vault, open_index, embedder):
    vault = make_vault(NOTES)
    ix = open_index(vault)
    first = ix.reconcile()
    ix.close()  # a restart: one writer at a time
    assert first.chunks_embedded >= 4
    # touching a file without changing its text must not re-embed either
    os.utime(vault / "Work/Heron.md", None)
    second = open_index(vault).reconcile()
    assert second.chunks_embedded == 0 and second.indexed == 0 and second.unchanged == 3


def test_moving_a_folder_reuses_vectors(make_vault, open_index):
    vault = make_vault(NOTES)
    ix = open_index(vault)
    ix.reconcile()
    os.rename(vault / "Garden", vault / "Outdoors")
    report = ix.reconcile()
    assert report.indexed == 1 and report.removed == 1
    assert report.chunks_embedded == 0 and report.chunks_reused >= 2
    assert paths(search(ix, "tomato watering", 1)) == ["Outdoors/Vegetables.md"]


def test_editing_one_section_embeds_only_that_chunk(make_vault, open_index):
    vault = make_vault(NOTES)
    ix = open_index(vault)
    ix.reconcile()
    note = vault / "Garden/Vegetables.md"
    note.write_text(note.read_text().replace("start seeds indoors in February", "start seeds indoors in March"))
    report = ix.reconcile()
    assert report.chunks_embedded == 1


def test_ignored_folders_and_globs(make_vault, open_index):
    vault = make_vault({
        **NOTES,
        ".obsidian/workspace.md": "# hidden\n\nzebra",
        ".trash/Old.md": "# Old\n\nzebra",
        "Templates/Daily.md": "# Template\n\nzebra",
    })
    ix = open_index(vault, index={"ignore": ["Templates/*"]})
    ix.reconcile()
    st = ix.status()
    assert st["notes_indexed"] == 3
    assert all("zebra" not in h.text for h in search(ix, "zebra", 5))
