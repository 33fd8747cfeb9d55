"""`vault-agent plugin install`: the Obsidian plugin, copied into a vault (plugin_install.py does it)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import UserError
from ..plugin_install import default_plugin_dir

plugin_app = typer.Typer(help="The Obsidian plugin.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    plugin_app.command("install")(install_command)
    app.add_typer(plugin_app, name="plugin")


def install_command(
    vault: Optional[Path] = typer.Option(None, "--vault", "-v", help="Vault folder (default: the configured vault)."),
    url: Optional[str] = typer.Option(None, "--url", help="Daemon URL (default: the running daemon's, else the configured one)."),
    plugin_dir: Path = typer.Option(default_plugin_dir(), "--plugin-dir", help="Where the built plugin is."),
):
    """Copy the built plugin into <vault>/.obsidian/plugins/vault-agent/ with the daemon's URL and token."""
    from ..config import load_settings
    from ..paths import app_dirs
    from ..plugin_install import daemon_url, install
    from ..server.auth import load_or_create_token

    target = vault or load_settings().vault
    if target is None:
        raise UserError("no vault given: pass --vault PATH (or set `vault` in config.toml)")
    token = load_or_create_token(app_dirs().ensure().token_file)
    dest = install(Path(target), plugin_dir, url or daemon_url(), token)
    print(f"installed the vault-agent plugin in {dest}")
    print("In Obsidian: Settings -> Community plugins -> turn on community plugins if asked -> enable \"Vault agent\".")
