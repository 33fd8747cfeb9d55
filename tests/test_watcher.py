"""Live sync through the real watchdog observer: creates, edits, deletes, renames and editor-style
atomic saves all reach the index without a manual reindex."""

from __future__ import annotations

import os
import time

import pytest

from conftest import wait_until
from vault_agent.index.search import search
from vault_agent.vault.watcher import DebouncedWatcher

NOTES = {"Start.md": "# Start\n\nThe vault begins here with a note about lighthouses.\n"}


@pytest.fixture
def live(make_vault, open_index):
    vault = make_vault(NOTES)
    ix = open_index(vault, index={"debounce_seconds": 0.2})
    ix.reconcile()
    watcher = DebouncedWatcher(ix.files, ix.sync_paths, ix.reconcile, debounce=0.2).start()
    ix.test_watcher = watcher
    yield vault, ix
    watcher.stop()


def wait_for(predicate, timeout=15.0):
    """True once predicate holds (an assertion error names the timeout if it never does)."""
    return bool(wait_until(predicate, timeout=timeout))


def indexed_paths(ix):
    return set(ix.catalog.note_stats())


def test_created_note_becomes_searchable(live):
    vault, ix = live
    (vault / "Kayak.md").write_text("# Kayak\n\nThe sea kayak is stored in the garage loft.\n")
    assert wait_for(lambda: "Kayak.md" in indexed_paths(ix))
    assert search(ix, "where is the kayak kept", 1)[0].path == "Kayak.md"


def test_edit_replaces_old_text(live):
    vault, ix = live
    (vault / "Start.md").write_text("# Start\n\nNow this note is about volcanoes in Iceland.\n")
    assert wait_for(lambda: "volcanoes" in " ".join(h.text for h in search(ix, "volcano", 3)))
    assert all("lighthouses" not in h.text for h in search(ix, "lighthouse", 5))


def test_delete_removes_note(live):
    vault, ix = live
    (vault / "Start.md").unlink()
    assert wait_for(lambda: indexed_paths(ix) == set())
    assert ix.catalog.all_chunk_ids() == set() and ix.vectors.count() == 0


def test_rename_moves_note(live):
    vault, ix = live
    os.rename(vault / "Start.md", vault / "Lighthouses.md")
    assert wait_for(lambda: indexed_paths(ix) == {"Lighthouses.md"})
    assert search(ix, "lighthouse", 1)[0].path == "Lighthouses.md"


def test_atomic_save_via_temp_file_and_rename(live):
    vault, ix = live
    tmp = vault / ".Start.md.tmp-1234"
    tmp.write_text("# Start\n\nRewritten by an editor that saves atomically: now about glaciers.\n")
    os.replace(tmp, vault / "Start.md")
    assert wait_for(lambda: "glaciers" in search(ix, "glacier", 1)[0].text)
    assert indexed_paths(ix) == {"Start.md"}  # the temp file was never indexed


def test_folder_rename_moves_all_notes(live):
    vault, ix = live
    (vault / "Trips").mkdir()
    (vault / "Trips" / "Norway.md").write_text("# Norway\n\nFjords and ferries in June.\n")
    assert wait_for(lambda: "Trips/Norway.md" in indexed_paths(ix))
    os.rename(vault / "Trips", vault / "Travel")
    assert wait_for(lambda: indexed_paths(ix) == {"Start.md", "Travel/Norway.md"})


def test_burst_of_edits_is_debounced(live):
    vault, ix = live
    note = vault / "Counter.md"
    for i in range(20):
        note.write_text(f"# Counter\n\nThe counter reads {i} apples.\n")
    assert wait_for(lambda: "19 apples" in " ".join(r.text for r in ix.catalog.chunks_by_id(sorted(ix.catalog.all_chunk_ids())).values()))
    assert ix.catalog.counts()["chunks"] == 2
    assert ix.test_watcher.syncs <= 3  # 20 saves, a handful of index passes at most


# --- events that cannot concern a note ------------------------------------------------------------

@pytest.fixture
def counted(make_vault, open_index):
    """A live watcher whose reconciles (folder-triggered rescans) are counted."""
    vault = make_vault({**NOTES, ".git/HEAD": "ref: refs/heads/main\n", ".obsidian/app.json": "{}"})
    ix = open_index(vault)
    ix.reconcile()
    rescans = []

    def rescan():
        rescans.append(time.monotonic())
        return ix.reconcile()

    watcher = DebouncedWatcher(ix.files, ix.sync_paths, rescan, debounce=0.5).start()
    yield vault, ix, rescans
    watcher.stop()


def test_churn_under_ignored_folders_does_not_postpone_indexing(counted):
    vault, ix, _ = counted
    stop = time.monotonic() + 6
    (vault / "Tide.md").write_text("# Tide\n\nLow tide is at 14:10 on Saturday.\n")
    written = time.monotonic()
    n = 0
    while time.monotonic() < stop and "Tide.md" not in indexed_paths(ix):  # git busy writing objects
        (vault / ".git" / f"obj{n % 5}").write_text(str(n))
        (vault / ".obsidian" / "workspace.json").write_text(str(n))
        n += 1
        time.sleep(0.05)  # the pace of a busy git, not a wait for anything
    assert "Tide.md" in indexed_paths(ix)
    assert time.monotonic() - written < 4  # before: every .git write restarted the 0.5 s quiet time


def test_new_folders_under_git_or_obsidian_trigger_no_reconcile(counted):
    vault, ix, rescans = counted
    (vault / ".git" / "refs" / "tags").mkdir(parents=True)
    (vault / ".obsidian" / "plugins" / "calendar").mkdir(parents=True)
    os.rename(vault / ".git" / "refs" / "tags", vault / ".git" / "refs" / "tags2")
    (vault / "Sentinel.md").write_text("# Sentinel\n\nWritten after the folder churn.\n")
    # the watcher handles events in order: once this note is in, the churn before it was handled
    assert wait_for(lambda: "Sentinel.md" in indexed_paths(ix), timeout=10)
    assert rescans == []  # before: each of these ran a full reconcile
    (vault / "Trips").mkdir()  # a folder that can hold notes still does
    assert wait_for(lambda: len(rescans) == 1, timeout=10)
