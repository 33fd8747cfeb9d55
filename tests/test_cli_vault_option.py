"""Every command on a vault honours --vault the same way (cli/common.local_or_daemon): through the
daemon serving that vault, else in this process; never through the daemon of another vault."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from vault_agent.cli import app
from vault_agent.client import ApiClient
from vault_agent.errors import UserError

runner = CliRunner()


class OpenedHere(UserError):
    pass


@pytest.fixture
def daemon_home(api, monkeypatch):
    """This process sees the fake daemon as the user's daemon (its daemon.json and token)."""
    monkeypatch.setenv("VAULT_AGENT_HOME", str(api.daemon.dirs.state.parent))
    return api


@pytest.fixture
def local_index(monkeypatch):
    """Opening an index in this process stops the command, naming the vault it was for."""
    import vault_agent.index.indexer as indexer

    def refuse(settings, root, dirs, **kwargs):
        raise OpenedHere(f"opened here: {root}")

    monkeypatch.setattr(indexer, "Indexer", refuse)


def test_ask_uses_the_daemon_serving_the_given_vault_only(daemon_home, local_index, make_vault):
    api = daemon_home
    out = runner.invoke(app, ["ask", "What is Project Heron?", "--vault", str(api.vault), "--json"])
    assert out.exit_code == 0, out.output
    assert api.runtime.log.get_response(json.loads(out.stdout)["response_id"]) is not None  # the daemon answered

    other = make_vault({"Other.md": "# Other\n\nNot what the daemon serves.\n"}, name="other")
    out = runner.invoke(app, ["ask", "What is Project Heron?", "--vault", str(other), "--json"])
    assert isinstance(out.exception, OpenedHere) and str(other.resolve()) in str(out.exception)


def test_pairs_generate_uses_the_daemon_serving_the_given_vault_only(daemon_home, local_index, make_vault,
                                                                   monkeypatch):
    api = daemon_home
    called: list[str] = []
    done = {"running": False, "total": 1,
            "summary": {"chunks_seen": 1, "kept": 0, "dropped_total": 1, "dropped": {}}}

    def post(self, path, body=None):
        called.append(f"{self.base_url} POST {path}")
        return done

    monkeypatch.setattr(ApiClient, "post", post)  # no pairs land in the shared daemon's log
    out = runner.invoke(app, ["pairs", "generate", "--vault", str(api.vault), "--limit", "1", "--json"])
    assert out.exit_code == 0, out.output
    assert called == [f"{api.url} POST /pairs/generate"]

    other = make_vault({"Other.md": "# Other\n\nNot what the daemon serves.\n"}, name="other")
    out = runner.invoke(app, ["pairs", "generate", "--vault", str(other), "--limit", "1", "--json"])
    assert isinstance(out.exception, OpenedHere) and str(other.resolve()) in str(out.exception)
    assert len(called) == 1  # the other vault's run never reached this daemon
