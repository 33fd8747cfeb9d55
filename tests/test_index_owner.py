"""One owner per index: whoever writes it holds its lock; `status`, `search` and `index` go through
the running daemon; without one, `status` and `search` open the index read-only and write nothing.

The daemon here is real (uvicorn on loopback, real index and chromadb, the hashing test embedder) but built
with a stand-in for the chat model: these tests never ask a question, and loading the models would
only make them slow. The CLI runs as real subprocesses, as a user would run it."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import start_daemon
from vault_agent.index.lock import IndexBusy

REPO = Path(__file__).resolve().parents[1]
NOTES = {
    "Kettle.md": "# Kettle\n\nThe kettle descaler is citric acid, one spoon per litre.\n",
    "Boat.md": "# Boat\n\n## Engine\n\nThe outboard needs fresh two-stroke oil every spring.\n",
}


def no_chat_model():
    """The parts of a chat backend that the daemon touches when nobody asks anything."""
    return SimpleNamespace(model_id="none (index tests)", adapter_version=None, adapter_served_as=None,
                           close=lambda: None)


def cli(*args, home, env=None, timeout=180):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_AGENT_")}
    full_env.update({"VAULT_AGENT_HOME": str(home), "PYTHONPATH": str(REPO), **(env or {})})
    return subprocess.run([sys.executable, "-m", "vault_agent.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)


@pytest.fixture
def served(make_vault, agent_home, embedder):
    vault = make_vault(NOTES)
    running = start_daemon(vault, agent_home, embedder, backend=no_chat_model(), server={"port": 0},
                           index={"debounce_seconds": 0.2})
    yield running
    running.stop()


def files_under(root: Path) -> dict[str, tuple[int, str]]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = (p.stat().st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest())
    return out


def test_status_with_other_settings_does_not_wipe_the_daemons_index(served, agent_home):
    ix = served.runtime.indexer
    before = ix.catalog.counts()
    assert before["notes"] == 2
    out = cli("status", "--vault", str(served.vault), "--json", home=agent_home,
              env={"VAULT_AGENT_INDEX__CHUNK_CHARS": "300"})
    assert out.returncode == 0, out.stderr
    assert f'"daemon": "{served.url}"' in out.stdout  # answered by the daemon, not by a second opener
    assert ix.catalog.counts() == before  # before: the other chunk_chars reset the catalog under the daemon
    assert ix.catalog.all_chunk_ids() == ix.vectors.all_ids()


def test_search_goes_through_the_daemon(served, agent_home):
    out = cli("search", "descaling the kettle", "--vault", str(served.vault), "-k", "1", home=agent_home)
    assert out.returncode == 0, out.stderr
    assert "[[Kettle#Kettle]]" in out.stdout


def test_index_while_the_daemon_runs_asks_the_daemon(served, agent_home):
    (served.vault / "Bread.md").write_text("# Bread\n\nRye needs a longer proof than wheat.\n")
    out = cli("index", "--vault", str(served.vault), "--full", home=agent_home)
    assert out.returncode == 0, out.stderr
    assert "3/3 notes indexed" in out.stdout
    chunks = served.runtime.indexer.catalog.counts()["chunks"]
    assert f"{chunks} chunks embedded" in out.stdout  # --full re-embedded everything, in the daemon
    r = served.http.get("/status").json()["index"]
    assert r["notes_indexed"] == 3 and r["orphan_vectors_pruned"] == 0 and r["missing_vectors_restored"] == 0


def test_second_serve_on_the_same_vault_exits_naming_the_first(served, agent_home):
    out = cli("serve", "--vault", str(served.vault), "--port", "0", home=agent_home, timeout=120)
    assert out.returncode == 2
    line = out.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert f"pid {os.getpid()}" in line and served.url in line
    assert served.http.get("/status").status_code == 200  # the first one is untouched


def test_read_only_open_writes_nothing_and_resets_nothing(make_vault, open_index, agent_home):
    from vault_agent.config import load_settings
    from vault_agent.index.indexer import Indexer
    from vault_agent.index.search import search
    from vault_agent.paths import app_dirs

    vault = make_vault(NOTES)
    ix = open_index(vault)
    ix.reconcile()
    ix.close()
    index_dir = app_dirs().index_for(vault.resolve())
    before = files_under(index_dir)
    ro = Indexer(load_settings(vault=vault, index={"chunk_chars": 300}), vault.resolve(), app_dirs(),
                 embedder=ix.embedder, readonly=True)
    try:
        st = ro.status()
        assert st["notes_indexed"] == 2 and st["settings_changed"] is True
        assert search(ro, "outboard engine oil", 1)[0].path == "Boat.md"
    finally:
        ro.close()
    assert files_under(index_dir) == before  # not a byte, not an mtime


def test_read_only_status_of_a_never_indexed_vault_creates_nothing(make_vault, agent_home):
    vault = make_vault(NOTES)
    out = cli("status", "--vault", str(vault), home=agent_home)
    assert out.returncode == 0, out.stderr
    assert "0 indexed / 0 total" in out.stdout and "not running" in out.stdout
    assert not (agent_home / "data").exists()


def test_a_second_writer_is_refused_and_readers_wait_for_no_one(make_vault, open_index, agent_home):
    vault = make_vault(NOTES)
    writer = open_index(vault)
    with pytest.raises(IndexBusy, match=f"pid {os.getpid()}"):
        open_index(vault)
    out = cli("status", "--vault", str(vault), home=agent_home, timeout=60)  # a reader vs a live writer
    assert out.returncode == 2 and "being written by `vault-agent index`" in out.stderr
    writer.close()
    assert open_index(vault) is not None  # the lock died with its holder's close


def test_a_writer_waits_for_a_short_reader(make_vault, open_index, agent_home, embedder):
    from vault_agent.config import load_settings
    from vault_agent.index.indexer import Indexer
    from vault_agent.paths import app_dirs

    vault = make_vault(NOTES)
    open_index(vault).close()
    ro = Indexer(load_settings(vault=vault), vault.resolve(), app_dirs(), embedder=embedder, readonly=True)
    threading.Timer(0.5, ro.close).start()
    started = time.monotonic()
    ix = open_index(vault)  # blocks until the reader is done, then owns the index
    assert 0.3 < time.monotonic() - started < 10
    assert ix.reconcile().indexed == 2
