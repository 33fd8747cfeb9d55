"""Catalog (SQLite) and vectors (chromadb) describe one index and must agree after every operation,
a crash between the two writes included: the real stores, the hashing test embedder, crashes
simulated by raising (or dying) between the vector write and the catalog commit."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vault_agent.index.search import search

NOTES = {
    "Tea.md": "# Tea\n\n## Brewing\n\nGreen tea steeps at 80 C for two minutes.\n\n## Storage\n\n"
    "Keep the leaves in a dark tin away from spices.\n",
    "Bikes.md": "# Bikes\n\nThe gravel bike needs new brake pads before the autumn ride.\n",
    "Garden.md": "# Garden\n\nThe rhubarb crowns were divided in March and mulched with compost.\n",
}


def agree(ix) -> bool:
    return ix.catalog.all_chunk_ids() == ix.vectors.all_ids()


def test_a_note_that_starts_failing_loses_its_vectors_too(make_vault, open_index):
    vault = make_vault(NOTES)
    ix = open_index(vault)
    ix.reconcile()
    bike_ids = ix.catalog.chunk_ids("Bikes.md")
    assert bike_ids and bike_ids <= ix.vectors.all_ids()
    (vault / "Bikes.md").write_bytes(b"\x00\x01binary now")
    report = ix.reconcile()
    assert "binary" in report.errors["Bikes.md"]
    assert not (bike_ids & ix.vectors.all_ids())  # before: the rows went, the vectors stayed
    assert agree(ix)
    assert all(h.path != "Bikes.md" for h in search(ix, "gravel bike brake pads", 3))


def test_settings_change_resets_vectors_as_well_as_catalog(make_vault, open_index):
    vault = make_vault(NOTES)
    ix = open_index(vault)
    ix.reconcile()
    ix.close()
    ix = open_index(vault, index={"chunk_chars": 300})
    assert ix.catalog.counts() == {"notes": 0, "chunks": 0}
    assert ix.vectors.count() == 0  # before: the old vectors stayed, waiting to be re-used or to haunt search
    report = ix.reconcile()
    assert report.chunks_embedded == ix.catalog.counts()["chunks"] and report.chunks_reused == 0
    assert agree(ix)


def test_full_reindex_re_embeds_every_chunk(make_vault, open_index, embedder):
    vault = make_vault(NOTES)
    ix = open_index(vault)
    ix.reconcile()
    before = embedder.embedded_count
    report = ix.reconcile(force=True)
    chunks = ix.catalog.counts()["chunks"]
    assert report.chunks_embedded == chunks and report.chunks_reused == 0
    assert embedder.embedded_count - before == chunks
    assert agree(ix)


@pytest.mark.slow  # loads the real embedding model (twice, from two folders)
def test_two_models_in_folders_of_the_same_name_do_not_share_vectors(make_vault, tmp_path, agent_home):
    """Each model sits in a folder called `model`; before, both got the collection 'chunks-model'."""
    from vault_agent.config import load_settings
    from vault_agent.index.embedder import resolve_embedding_model
    from vault_agent.index.indexer import Indexer
    from vault_agent.paths import app_dirs

    source = Path(resolve_embedding_model("bundled"))
    models = []
    for name in ("a", "b"):
        dest = tmp_path / name / "model"
        for path in source.rglob("*"):
            target = dest / path.relative_to(source)
            if path.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(path, target)  # a cheap copy: same weights, another folder
        models.append(dest)
    vault = make_vault(NOTES)
    dirs = app_dirs().ensure()
    ix = Indexer(load_settings(vault=vault, index={"embedding_model": str(models[0])}), vault, dirs)
    ix.reconcile()
    first = ix.vectors.name
    assert first.endswith("-d384")
    ix.close()
    ix = Indexer(load_settings(vault=vault, index={"embedding_model": str(models[1])}), vault, dirs)
    try:
        assert ix.vectors.name != first
        report = ix.reconcile()
        assert report.chunks_reused == 0 and report.chunks_embedded == ix.catalog.counts()["chunks"]
        assert agree(ix)
    finally:
        ix.close()


def test_crash_after_vector_write_before_catalog_commit_is_repaired(make_vault, open_index, monkeypatch):
    vault = make_vault(NOTES)
    ix = open_index(vault)
    ix.reconcile()
    (vault / "Tea.md").write_text("# Tea\n\nOolong is rolled into tight pearls and steeped three times.\n")

    def crash(*a, **k):
        raise RuntimeError("simulated crash between the stores")

    monkeypatch.setattr(ix.catalog, "replace_notes", crash)
    with pytest.raises(RuntimeError):
        ix.reconcile()
    orphans = ix.vectors.all_ids() - ix.catalog.all_chunk_ids()
    assert orphans  # the state a crash leaves: vectors the catalog never heard of
    monkeypatch.undo()
    (vault / "Tea.md").unlink()  # and the edit is gone by the time we restart
    report = ix.reconcile()
    assert report.orphan_vectors_pruned == len(orphans)
    assert agree(ix)
    assert ix.status()["orphan_vectors_pruned"] == len(orphans)


def test_crash_after_catalog_commit_before_stale_delete_is_repaired(make_vault, open_index, monkeypatch):
    vault = make_vault(NOTES)
    ix = open_index(vault)
    ix.reconcile()
    old = ix.catalog.chunk_ids("Garden.md")
    (vault / "Garden.md").write_text("# Garden\n\nThe pear tree was pruned hard in January.\n")
    real_delete = ix.vectors.delete

    def crash(ids):
        if set(ids) & old:
            raise RuntimeError("simulated crash before the replaced vectors were deleted")
        return real_delete(ids)

    monkeypatch.setattr(ix.vectors, "delete", crash)
    with pytest.raises(RuntimeError):
        ix.reconcile()
    monkeypatch.undo()
    assert old <= ix.vectors.all_ids() - ix.catalog.all_chunk_ids()
    report = ix.reconcile()
    assert report.orphan_vectors_pruned == len(old) and agree(ix)


def test_lost_vectors_are_re_embedded_and_counted(make_vault, open_index):
    vault = make_vault(NOTES)
    ix = open_index(vault)
    ix.reconcile()
    lost = sorted(ix.catalog.chunk_ids("Tea.md"))
    ix.vectors.delete(lost)  # e.g. a vector write that never reached the disk
    question = ix.embedder.embed_query("how hot should the water be for green tea")
    assert not set(lost) & {cid for cid, _ in ix.vectors.query(question, 3)}  # invisible to the dense ranker...
    report = ix.reconcile()
    assert report.missing_vectors_restored == len(lost) and report.chunks_embedded == len(lost)
    assert agree(ix)
    assert ix.status()["missing_vectors_restored"] == len(lost)
    assert set(lost) & {cid for cid, _ in ix.vectors.query(question, 3)}  # ...until the repair


KILL_SCRIPT = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from vault_agent.config import load_settings
    from vault_agent.index.indexer import Indexer
    from vault_agent.paths import app_dirs
    from hashing_embedder import HashingEmbedder  # the test's own embedder, as open_index uses

    vault = Path(sys.argv[1])
    ix = Indexer(load_settings(vault=vault), vault, app_dirs().ensure(), embedder=HashingEmbedder())
    ix.catalog.replace_notes = lambda *a, **k: os._exit(9)  # die, no cleanup, right after the vector write
    ix.reconcile()
""")


def test_process_killed_between_the_stores_is_repaired_on_next_start(make_vault, open_index, agent_home):
    vault = make_vault(NOTES)
    tests = Path(__file__).parent
    env = {**os.environ, "VAULT_AGENT_HOME": str(agent_home), "PYTHONPATH": f"{tests.parent}{os.pathsep}{tests}"}
    out = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(vault.resolve())], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 9, out.stderr[-2000:]
    ix = open_index(vault)
    assert ix.vectors.count() > 0 and ix.catalog.counts()["chunks"] == 0  # vectors written, catalog not
    report = ix.reconcile()
    assert agree(ix) and ix.catalog.counts()["notes"] == 3
    assert report.chunks_embedded == 0  # the vectors the dead process wrote are the right ones: kept, not redone
    assert search(ix, "brake pads", 1)[0].path == "Bikes.md"


def test_no_op_restart_never_loads_the_embedding_model(make_vault, open_index, agent_home):
    """The collection is found by the model's identity; its dimension is in its name."""
    from hashing_embedder import HashingEmbedder

    from vault_agent.config import IndexSettings, load_settings
    from vault_agent.index.embedder import Embedder
    from vault_agent.index.indexer import Indexer
    from vault_agent.paths import app_dirs

    assert Embedder(IndexSettings())._model is None  # the real one loads its model on first use only
    touched = []

    class Fresh(HashingEmbedder):  # an embedder that notes every use that would load a real model
        @property
        def model(self):
            touched.append("model")
            return super().model

        @property
        def dimension(self):
            touched.append("dimension")
            return super().dimension

    vault = make_vault(NOTES)
    ix = open_index(vault)
    ix.reconcile()
    ix.close()
    fresh = Fresh()
    again = Indexer(load_settings(vault=vault), vault.resolve(), app_dirs(), embedder=fresh)
    try:
        report = again.reconcile()
        assert report.unchanged == 3 and report.chunks_embedded == 0
        assert touched == [] and fresh.embedded_count == 0  # no model load for a start that embeds nothing
        assert agree(again)
    finally:
        again.close()
