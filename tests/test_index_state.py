"""Every answer says which index it was made with: `syncing` (with notes indexed / total) until the
first full pass is done, `ready` after. A new user's first question on a fresh vault must not look
like a complete answer when the index had only part of the vault."""

from __future__ import annotations

from vault_agent.index.state import syncing_note

NOTES = {f"Notes/Note {i}.md": f"# Note {i}\n\nThe number of this note is {i} and it is about topic {i}.\n"
         for i in range(12)}


def test_index_state_is_syncing_until_the_first_pass_ends_then_ready(make_vault, open_index):
    ix = open_index(make_vault(NOTES), index={"batch_size": 4})
    before = ix.index_state()
    assert before == {"state": "syncing", "notes_indexed": 0, "notes_total": 0}

    seen = []
    ix.reconcile(progress=lambda done, total: seen.append(ix.index_state()))
    assert seen, "the reconcile reported no progress"
    assert all(s["state"] == "syncing" and s["notes_total"] == 12 for s in seen)
    assert seen[0]["notes_indexed"] < 12  # mid-pass, the count is partial

    assert ix.index_state() == {"state": "ready", "notes_indexed": 12, "notes_total": 12}


def test_syncing_note_names_the_coverage_and_stays_quiet_when_ready():
    note = syncing_note({"state": "syncing", "notes_indexed": 3, "notes_total": 40})
    assert note is not None and "3/40 notes" in note and "syncing" in note
    assert syncing_note({"state": "ready", "notes_indexed": 40, "notes_total": 40}) is None
    assert syncing_note(None) is None
