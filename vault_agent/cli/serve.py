"""`vault-agent serve` (the daemon) and `vault-agent token` (its API token)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from .common import VaultOpt, console


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("token")(token)


def serve(
    vault: Optional[Path] = VaultOpt,
    port: Optional[int] = typer.Option(None, "--port", "-p", help="Port (default server.port, 8765)."),
    host: Optional[str] = typer.Option(None, "--host", help="Bind address (default 127.0.0.1)."),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="Allow a non-loopback --host."),
):
    """Run the daemon: live index, local model and the HTTP API on 127.0.0.1."""
    import logging

    from ..config import load_settings
    from ..daemon import Daemon
    from ..paths import app_dirs
    from ..vault.files import resolve_vault

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = {k: v for k, v in {"port": port, "host": host}.items() if v is not None}
    settings = load_settings(vault=vault)
    if server:
        settings = load_settings(vault=vault, server=settings.server.model_copy(update=server).model_dump())
    root = resolve_vault(settings.vault)
    daemon = Daemon(settings, root, app_dirs(), allow_remote=allow_remote).build()
    out = console()
    out.print(f"vault-agent serving [bold]{root}[/] at [bold]{daemon.url}[/]", highlight=False)
    out.print(f"model: {daemon.runtime.backend.model_id}; OpenAPI schema at {daemon.url}/openapi.json "
              "(with the token)", highlight=False)
    out.print("token: `vault-agent token` prints it (send it as `Authorization: Bearer <token>`)")
    out.print("Ctrl-C stops.")
    try:
        daemon.serve()
    finally:
        if daemon.busy_threads():  # closed and consistent, but a native call is still running: leave now
            logging.shutdown()
            sys.stderr.flush()
            sys.stdout.flush()
            os._exit(130 if sys.exc_info()[0] is KeyboardInterrupt else 0)


def token():
    """Print the daemon's API token (created on first start)."""
    from ..paths import app_dirs
    from ..server.auth import load_or_create_token

    print(load_or_create_token(app_dirs().ensure().token_file))
