"""`vault-agent config`: the effective settings and where each came from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .common import VaultOpt, console, settings_for


def register(app: typer.Typer) -> None:
    app.command("config")(show_config)


def show_config(vault: Optional[Path] = VaultOpt):
    """Show the effective configuration and where each value came from."""
    from ..config import explain
    from ..paths import app_dirs

    settings = settings_for(vault)
    out = console()
    out.print(f"config file: {app_dirs().config_file}", highlight=False)
    for key, value, source in explain(settings, cli_keys={"vault"} if vault else set()):
        out.print(f"{key:28} = {json.dumps(value, default=str):40} [dim]# {source}[/]", highlight=False)
