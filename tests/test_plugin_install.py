"""`vault-agent plugin install`: the built plugin lands in the vault with the daemon's URL and token,
the user's plugin data survives, and every mistake is one line on stderr (exit 2)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from vault_agent.plugin_install import RELEASE_FILES, install

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def built(tmp_path) -> Path:
    """A plugin folder holding the three release files (contents stand in for a real build)."""
    d = tmp_path / "plugin_build"
    d.mkdir()
    for name in RELEASE_FILES:
        (d / name).write_text(f"/* {name} v1 */\n")
    return d


@pytest.fixture
def vault(tmp_path) -> Path:
    v = tmp_path / "MyVault"
    (v / ".obsidian").mkdir(parents=True)
    (v / "Note.md").write_text("# Note\n")
    return v


def cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "VAULT_AGENT_HOME": str(home), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "vault_agent.cli", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_install_copies_the_plugin_and_keeps_the_users_queued_ratings(vault, built):
    dest = vault / ".obsidian" / "plugins" / "vault-agent"
    dest.mkdir(parents=True)
    queued = [{"key": "k1", "path": "/feedback", "body": {"response_id": "r", "rating": 1}, "label": "thumbs up", "queuedAt": 1}]
    (dest / "data.json").write_text(json.dumps({"daemonUrl": "http://127.0.0.1:1", "token": "old", "outbox": queued}))

    assert install(vault, built, "http://127.0.0.1:8765", "tok-new") == dest

    for name in RELEASE_FILES:
        assert (dest / name).read_bytes() == (built / name).read_bytes()
    data = json.loads((dest / "data.json").read_text())
    assert data == {"daemonUrl": "http://127.0.0.1:8765", "token": "tok-new", "outbox": queued}
    assert stat.S_IMODE((dest / "data.json").stat().st_mode) == 0o600  # it holds the API token
    assert not list(dest.glob(".*.tmp"))


def test_reinstall_replaces_an_older_build(vault, built):
    install(vault, built, "http://127.0.0.1:8765", "t")
    (built / "main.js").write_text("/* v2 */\n")
    dest = install(vault, built, "http://127.0.0.1:9000", "t")
    assert (dest / "main.js").read_text() == "/* v2 */\n"
    assert json.loads((dest / "data.json").read_text())["daemonUrl"] == "http://127.0.0.1:9000"


@pytest.mark.parametrize("problem, expected", [
    ("no .obsidian", "has no .obsidian folder: open it once in Obsidian"),
    ("not built", "plugin is not built (main.js missing"),
    ("no vault", "no vault folder at"),
    ("bad data.json", "is not readable JSON"),
])
def test_mistakes_are_one_line_with_what_to_do(problem, expected, vault, built, tmp_path):
    args = ["plugin", "install", "--vault", str(vault), "--plugin-dir", str(built)]
    if problem == "no .obsidian":
        (vault / ".obsidian").rmdir()
    elif problem == "not built":
        (built / "main.js").unlink()
    elif problem == "no vault":
        args[3] = str(tmp_path / "nowhere")
    else:
        dest = vault / ".obsidian" / "plugins" / "vault-agent"
        dest.mkdir(parents=True)
        (dest / "data.json").write_text("{not json")
    r = cli(*args, home=tmp_path / "home")
    assert r.returncode == 2, r.stderr
    assert expected in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr  # no traceback
    if problem == "not built":
        assert "make plugin" in r.stderr
    if problem == "bad data.json":  # the user's file is left alone
        assert (vault / ".obsidian/plugins/vault-agent/data.json").read_text() == "{not json"


def test_cli_points_the_plugin_at_the_running_daemon_with_its_token(vault, built, tmp_path):
    home = tmp_path / "home"
    (home / "state").mkdir(parents=True)
    (home / "state" / "daemon.json").write_text(json.dumps({"url": "http://127.0.0.1:45678", "pid": 1}))
    r = cli("plugin", "install", "--vault", str(vault), "--plugin-dir", str(built), home=home)
    assert r.returncode == 0, r.stderr
    assert "Community plugins" in r.stdout
    token = cli("token", home=home).stdout.strip()
    data = json.loads((vault / ".obsidian/plugins/vault-agent/data.json").read_text())
    assert data == {"daemonUrl": "http://127.0.0.1:45678", "token": token}
    assert len(token) > 20


def test_without_a_running_daemon_the_configured_port_is_used(vault, built, tmp_path):
    home = tmp_path / "home"
    (home / "config").mkdir(parents=True)
    (home / "config" / "config.toml").write_text("[server]\nport = 9123\n")
    r = cli("plugin", "install", "--vault", str(vault), "--plugin-dir", str(built), home=home)
    assert r.returncode == 0, r.stderr
    assert json.loads((vault / ".obsidian/plugins/vault-agent/data.json").read_text())["daemonUrl"] == "http://127.0.0.1:9123"
