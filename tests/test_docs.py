"""The README documents every setting with its default, every API route and every CLI command
(imitating datasette's test_docs): adding one without documenting it, or changing a default
without changing the README, fails here."""

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


def code_defaults(model=None, prefix: str = "") -> dict:
    """Setting key ("llm.n_ctx") -> its default in vault_agent/config.py."""
    from pydantic import BaseModel

    from vault_agent.config import Settings

    model = Settings() if model is None else model
    out = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            out.update(code_defaults(value, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = value
    return out


def readme_defaults() -> dict:
    """Setting key -> the default cell of its row in the README's settings table."""
    rows = re.findall(r"^\| `([a-z_]+(?:\.[a-z_]+)?)` \| ([^|]*) \|", README, re.MULTILINE)
    return {key: cell.strip() for key, cell in rows}


# Defaults the README says in words, and the value in the code that the words stand for.
IN_WORDS = {"none": None, "unset": None, "all cores": None}


def parse_default(cell: str):
    """A README default cell as a value: `[]`, {}, true, 5e-5, `bundled`, "comparison 3, rating 2"."""
    text = cell.strip("`")
    if text in IN_WORDS:
        return IN_WORDS[text]
    if text in ("true", "false"):
        return text == "true"
    if text in ("[]", "{}"):
        return [] if text == "[]" else {}
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        pass
    if re.fullmatch(r"[a-z_]+ [\d.]+(, [a-z_]+ [\d.]+)*", text):  # a mapping: "comparison 3, rating 2"
        return {k: float(v) for k, v in (item.split() for item in text.split(", "))}
    return text


def all_settings():
    return sorted(code_defaults())


@pytest.mark.parametrize("key", all_settings())
def test_every_setting_is_documented_with_its_default(key):
    documented = readme_defaults()
    assert key in documented, f"`{key}` has no row in the README's settings table"
    code, readme = code_defaults()[key], parse_default(documented[key])
    if isinstance(code, float) and isinstance(readme, (int, float)):
        assert readme == pytest.approx(code), f"{key}: README says {documented[key]}, config.py {code!r}"
    else:
        assert readme == code, f"{key}: README says {documented[key]}, config.py {code!r}"


def test_a_drifted_default_is_caught():
    """The check above can fail: a README row with another default does not parse to the code's."""
    assert parse_default("1024") == code_defaults()["train.max_length"]
    assert parse_default("512") != code_defaults()["train.max_length"]
    assert parse_default("comparison 3, correction 3, rating 2, synthetic 1") == code_defaults()["train.source_weights"]
    assert parse_default("comparison 2, correction 3, rating 2, synthetic 1") != code_defaults()["train.source_weights"]


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
