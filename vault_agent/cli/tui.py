"""`vault-agent tui`: the terminal rating app."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    app.command("tui")(tui)


def tui():
    """Rate answers in the terminal (needs a running daemon: vault-agent serve)."""
    from tui.app import run

    run()
