"""Bad notes get a per-file reason in status; everything else is still indexed; nothing crashes."""

from __future__ import annotations

import os
import subprocess
import sys

from vault_agent.index.search import search

GOOD = {"Good.md": "# Good\n\nThe lighthouse keeper logs the fog horn every evening.\n"}


def test_each_bad_file_is_reported_and_the_rest_indexed(make_vault, open_index):
    vault = make_vault({
        **GOOD,
        "Latin1.md": "# Café\n\nCrème brûlée recipe with vanilla.\n".encode("latin-1"),
        "Binary.md": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)),
        "Empty.md": "",
        "Huge.md": "# Huge\n\n" + ("lorem ipsum " * 1000 + "\n\n") * 4500,  # ~54 MB
    })
    os.symlink("Loop.md", vault / "Loop.md")  # a symlink to itself
    os.symlink(vault, vault / "Self")  # a folder loop
    os.symlink("/etc/hostname", vault / "Outside.md")
    ix = open_index(vault)
    report = ix.reconcile()
    st = ix.status()
    failed = st["failed"]
    assert "too large" in failed["Huge.md"] and "max_note_mb" in failed["Huge.md"]
    assert "binary" in failed["Binary.md"]
    assert "symlink" in failed["Loop.md"] or "loop" in failed["Loop.md"].lower()
    assert "outside the vault" in failed["Outside.md"]
    assert "UTF-8" in st["warnings"]["Latin1.md"]
    assert set(report.errors) == {"Huge.md", "Binary.md", "Loop.md", "Outside.md"}
    # the good, the empty and the mis-encoded notes are indexed
    assert st["notes_indexed"] == 3
    assert search(ix, "fog horn lighthouse", 1)[0].path == "Good.md"
    assert search(ix, "creme brulee vanilla dessert", 1)[0].path == "Latin1.md"


def test_fixing_a_bad_file_clears_its_error(make_vault, open_index):
    vault = make_vault({**GOOD, "Binary.md": b"\x00\x01\x02"})
    ix = open_index(vault)
    ix.reconcile()
    assert "Binary.md" in ix.status()["failed"]
    (vault / "Binary.md").write_text("# Fixed\n\nNow it is text about kayaks.\n")
    ix.reconcile()
    assert ix.status()["failed"] == {}
    assert search(ix, "kayak", 1)[0].path == "Binary.md"


def test_file_disappearing_mid_index_is_treated_as_deleted(make_vault, open_index, monkeypatch):
    vault = make_vault({**GOOD, "Gone.md": "# Gone\n\nshort lived"})
    ix = open_index(vault)
    real_read = ix.files.read

    def vanish(rel):
        if rel == "Gone.md":
            (vault / "Gone.md").unlink()
        return real_read(rel)

    monkeypatch.setattr(ix.files, "read", vanish)
    report = ix.reconcile()
    assert report.failed == 0 and ix.status()["notes_indexed"] == 1


def run_cli(*args, env_home):
    env = {**os.environ, "VAULT_AGENT_HOME": str(env_home)}
    return subprocess.run([sys.executable, "-m", "vault_agent.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_missing_vault_is_a_one_line_error(tmp_path, agent_home):
    out = run_cli("index", "--vault", str(tmp_path / "nope"), env_home=agent_home)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0
    assert "vault folder not found" in out.stderr and "Traceback" not in out.stderr


def test_config_value_of_wrong_type_is_a_one_line_error(tmp_path, agent_home):
    (agent_home / "config").mkdir(parents=True)
    (agent_home / "config" / "config.toml").write_text('[index]\nbatch_size = "lots"\n')
    out = run_cli("status", "--vault", str(tmp_path), env_home=agent_home)
    assert out.returncode == 2
    assert "index.batch_size" in out.stderr and "integer" in out.stderr
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr


def test_config_file_that_is_not_toml_is_a_one_line_error(tmp_path, agent_home):
    (agent_home / "config").mkdir(parents=True)
    (agent_home / "config" / "config.toml").write_text("this is = = not toml\n")
    out = run_cli("status", "--vault", str(tmp_path), env_home=agent_home)
    assert out.returncode == 2 and "not valid TOML" in out.stderr
    assert "Traceback" not in out.stderr
