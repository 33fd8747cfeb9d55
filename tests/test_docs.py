"""The README documents every setting, every API route and every CLI command (imitating
datasette's test_docs): adding one without documenting it fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_readme_starts_with_the_two_setup_commands():
    lines = [l for l in README.splitlines()[:5] if l.strip() and not l.startswith("```")]
    assert [l.split()[0:2] for l in lines[:2]] == [["make", "run"], ["make", "test"]]


def test_ci_runs_the_readme_test_command():
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert "make test" in ci


def all_settings():
    from vault_agent.config import Settings, _flatten

    return sorted(_flatten(Settings()))


@pytest.mark.parametrize("key", all_settings())
def test_every_setting_is_documented(key):
    assert f"`{key}`" in README


def test_every_route_is_documented(built_daemon):
    app = built_daemon.app
    documented = set(re.findall(r"`(GET|POST) (/[^` ?]*)", README))
    routes = {(m, r.path) for r in app.routes if getattr(r, "include_in_schema", False) for m in r.methods}
    missing = sorted(f"{m} {p}" for m, p in routes - documented)
    assert not missing, f"undocumented routes: {missing}"


def test_every_cli_command_is_documented():
    import typer.main

    from vault_agent.cli import app

    group = typer.main.get_command(app)
    names = []
    for name, cmd in group.commands.items():
        sub = getattr(cmd, "commands", None)
        names += [f"{name} {s}" for s in sub] if sub else [name]
    missing = [n for n in names if f"`vault-agent {n}" not in README]
    assert not missing, f"undocumented commands: {missing}"
