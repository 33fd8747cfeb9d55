"""Every bad file is one file's problem: an I/O error on one note is recorded against it in `status`
and the rest of the vault is indexed; only regular files are read (a named pipe called x.md never
blocks); a watcher batch that fails is retried with backoff.

The suite runs as root, where chmod cannot make a file unreadable, so permission and I/O errors are
raised by a wrapper around os.open / os.scandir for the one path under test."""

from __future__ import annotations

import errno
import os
import threading
import time

import pytest

from conftest import wait_until
from vault_agent.index.search import search
from vault_agent.vault.files import NoteReadError, VaultFiles
from vault_agent.vault.watcher import DebouncedWatcher

NOTES = {
    "Good.md": "# Good\n\nThe lighthouse keeper logs the fog horn every evening.\n",
    "Secret.md": "# Secret\n\nThe safe combination is written on the back of the clock.\n",
    "Other.md": "# Other\n\nOtters hold hands while they sleep.\n",
}


def fail_open_of(monkeypatch, path, err: OSError):
    real_open = os.open

    def fake_open(p, flags, *a, **k):
        if os.fspath(p) == os.fspath(path):
            raise err
        return real_open(p, flags, *a, **k)

    monkeypatch.setattr(os, "open", fake_open)


@pytest.mark.parametrize("err, reason", [
    (PermissionError(errno.EACCES, "Permission denied"), "Permission denied"),
    (OSError(errno.EIO, "Input/output error"), "Input/output error"),
], ids=["permission", "eio"])
def test_an_unreadable_note_is_reported_and_the_rest_indexed(make_vault, open_index, monkeypatch, err, reason):
    vault = make_vault(NOTES)
    ix = open_index(vault)
    fail_open_of(monkeypatch, vault.resolve() / "Secret.md", err)
    report = ix.reconcile()  # before: the error escaped VaultFiles.read and aborted the reconcile
    assert reason in report.errors["Secret.md"]
    st = ix.status()
    assert reason in st["failed"]["Secret.md"] and st["notes_indexed"] == 2
    assert search(ix, "otters sleeping", 1)[0].path == "Other.md"
    monkeypatch.undo()
    ix.reconcile()  # readable again: indexed, and the error is gone
    assert ix.status()["failed"] == {}
    assert search(ix, "where is the safe combination", 1)[0].path == "Secret.md"


def test_a_note_that_becomes_unreadable_leaves_no_rows_or_vectors(make_vault, open_index, monkeypatch):
    vault = make_vault(NOTES)
    ix = open_index(vault)
    ix.reconcile()
    secret = ix.catalog.chunk_ids("Secret.md")
    (vault / "Secret.md").write_text("# Secret\n\nChanged, and now unreadable.\n")
    fail_open_of(monkeypatch, vault.resolve() / "Secret.md", PermissionError(errno.EACCES, "Permission denied"))
    ix.reconcile()
    assert "Secret.md" in ix.status()["failed"]
    assert not (secret & ix.vectors.all_ids()) and ix.catalog.all_chunk_ids() == ix.vectors.all_ids()


def run_with_deadline(fn, seconds):
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("value", fn()), daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{fn} blocked for more than {seconds}s"
    return result["value"]


def test_a_named_pipe_called_md_never_blocks(make_vault, open_index):
    vault = make_vault(NOTES)
    os.mkfifo(vault / "Pipe.md")
    ix = open_index(vault)
    report = run_with_deadline(ix.reconcile, 60)
    assert "not a regular file" in report.errors["Pipe.md"]
    assert ix.status()["notes_indexed"] == 3
    report = run_with_deadline(lambda: ix.sync_paths({"Pipe.md"}), 30)  # the watcher's path, too
    assert "not a regular file" in ix.status()["failed"]["Pipe.md"]
    # a pipe swapped in after the stat: the read itself refuses it instead of waiting for a writer
    files = VaultFiles(vault.resolve())
    err = run_with_deadline(lambda: _read_or_error(files, "Pipe.md"), 10)
    assert isinstance(err, NoteReadError) and "not a regular file" in str(err)


def _read_or_error(files, rel):
    try:
        return files.read(rel)
    except NoteReadError as e:
        return e


def test_an_unlistable_folder_keeps_its_notes_and_is_reported(make_vault, open_index, monkeypatch):
    vault = make_vault({**NOTES, "Deep/Inner.md": "# Inner\n\nThe inner note talks about submarines.\n"})
    ix = open_index(vault)
    ix.reconcile()
    real_scandir = os.scandir
    deep = os.fspath(vault.resolve() / "Deep")

    def fake_scandir(path="."):
        if os.fspath(path) == deep:
            raise OSError(errno.EIO, "Input/output error", deep)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", fake_scandir)
    report = ix.reconcile()
    assert report.removed == 0  # not taken for deleted
    assert "cannot list folder" in ix.status()["failed"]["Deep/"]
    assert search(ix, "submarines", 1)[0].path == "Deep/Inner.md"


def test_a_failed_watcher_batch_is_retried_with_backoff(make_vault, open_index):
    vault = make_vault(NOTES)
    ix = open_index(vault)
    ix.reconcile()
    attempts: list[float] = []

    def flaky_sync(paths):
        attempts.append(time.monotonic())
        if len(attempts) <= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return ix.sync_paths(paths)

    watcher = DebouncedWatcher(ix.files, flaky_sync, ix.reconcile, debounce=0.1, retry_base=0.4).start()
    try:
        (vault / "New.md").write_text("# New\n\nA note about quinces and their jelly.\n")
        wait_until(lambda: "New.md" in ix.catalog.note_stats(), timeout=20, what="New.md, after the retries")
    finally:
        watcher.stop()
    assert "New.md" in ix.catalog.note_stats()  # before: the failed batch was dropped for good
    assert len(attempts) >= 3
    gaps = [b - a for a, b in zip(attempts, attempts[1:])]
    assert gaps[0] >= 0.4 and gaps[1] >= 0.8  # 0.4 s, then twice that
