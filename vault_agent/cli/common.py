"""What the commands share: the --vault option, which vault a command is about, and whether a
running daemon serves it (then the command goes through the daemon, which alone may write its index)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Optional

import typer

if TYPE_CHECKING:
    from ..client import ApiClient
    from ..config import Settings

VaultOpt = typer.Option(None, "--vault", "-v", help="Vault folder (overrides the configured one).")


def settings_for(vault: Optional[Path]) -> Settings:
    from ..config import load_settings

    return load_settings(vault=vault)


def resolve(vault: Optional[Path]) -> tuple[Settings, Path]:
    """The settings and the vault folder a command works on: --vault, else the configured vault,
    else the vault the user's running daemon serves (`make run` configures none)."""
    from ..vault.files import resolve_vault

    settings = settings_for(vault)
    if settings.vault is None and (served := served_vault()) is not None:
        settings = settings_for(served)
    return settings, resolve_vault(settings.vault)


def served_vault() -> Path | None:
    """The vault of the daemon this user runs (its daemon file), if any."""
    from .. import discovery
    from ..paths import app_dirs

    info = discovery.read(app_dirs())
    return info.vault if info is not None else None


class VaultTarget(NamedTuple):
    settings: Settings
    root: Path
    client: ApiClient | None  # the daemon serving `root`, or None: work in this process (the caller closes it)


def local_or_daemon(vault: Optional[Path], timeout: float | None = 120.0) -> VaultTarget:
    """The vault a command is about and a client for the daemon serving it, if one runs. Every command
    on a vault decides "through the daemon or here" with this, so each honours --vault the same way."""
    from ..client import ApiClient
    from ..paths import app_dirs

    settings, root = resolve(vault)
    return VaultTarget(settings, root, ApiClient.for_vault(app_dirs(), root, timeout=timeout))


def open_indexer(settings: Settings, root: Path, *, readonly: bool = False):
    """The vault's index, opened in this process: the writer (holds the index lock; refused with one
    line while another process writes) or, with readonly, a reader that never writes or resets."""
    from ..index.indexer import Indexer
    from ..paths import app_dirs

    dirs = app_dirs() if readonly else app_dirs().ensure()
    return Indexer(settings, root, dirs, readonly=readonly)


def console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr)
