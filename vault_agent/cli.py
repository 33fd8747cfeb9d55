"""`vault-agent` command line. Heavy libraries load inside commands so --help stays instant."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from .errors import UserError

app = typer.Typer(help="A local, self-improving assistant for your Obsidian vault.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)

VaultOpt = typer.Option(None, "--vault", "-v", help="Vault folder (overrides the configured one).")


def _settings(vault: Optional[Path]):
    from .config import load_settings

    return load_settings(vault=vault)


def open_indexer(vault: Optional[Path]):
    from .index.indexer import Indexer
    from .paths import app_dirs
    from .vault.files import resolve_vault

    settings = _settings(vault)
    root = resolve_vault(settings.vault)
    return Indexer(settings, root, app_dirs().ensure())


def _console():
    from rich.console import Console

    return Console()


@app.command()
def index(vault: Optional[Path] = VaultOpt, full: bool = typer.Option(False, help="Re-embed every note.")):
    """Index the vault (only what changed since last time)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    indexer = open_indexer(vault)
    console = _console()
    with Progress(TextColumn("indexing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("index", total=None)
        report = indexer.reconcile(progress=lambda done, total: bar.update(task, completed=done, total=total), force=full)
    st = indexer.status()
    console.print(
        f"{st['notes_indexed']}/{st['notes_total']} notes indexed, {st['chunks']} chunks "
        f"({report.indexed} updated, {report.removed} removed, {report.chunks_embedded} chunks embedded, "
        f"{report.chunks_reused} reused) in {report.seconds:.1f}s"
    )
    for path, why in report.errors.items():
        console.print(f"[yellow]skipped[/] {path}: {why}", highlight=False)
    indexer.close()


@app.command()
def search(
    query: str = typer.Argument(..., help="What to look for, in your own words."),
    vault: Optional[Path] = VaultOpt,
    k: int = typer.Option(5, "-k", help="Number of hits."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Search the index; prints ranked [[note#heading]] links with a snippet."""
    from .index.search import search as run_search

    indexer = open_indexer(vault)
    hits = run_search(indexer, query, k)
    if as_json:
        print(json.dumps([h.to_dict(indexer.vault.name) for h in hits], indent=2))
    else:
        console = _console()
        if not hits:
            console.print("no matches (is the vault indexed? run `vault-agent index`)")
        for n, hit in enumerate(hits, 1):
            console.print(f"[bold]{n}. {hit.link}[/]", highlight=False)
            console.print(f"   {hit.snippet()}", highlight=False, style="dim")
    indexer.close()


@app.command()
def status(vault: Optional[Path] = VaultOpt, as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Index coverage, chunk count, last sync and files that failed (with why)."""
    indexer = open_indexer(vault)
    st = indexer.status()
    indexer.close()
    if as_json:
        print(json.dumps(st, indent=2))
        return
    console = _console()
    console.print(f"vault:        {st['vault']}", highlight=False)
    console.print(f"notes:        {st['notes_indexed']} indexed / {st['notes_total']} total")
    console.print(f"chunks:       {st['chunks']}  (embeddings: {st['embedding_model']})")
    console.print(f"last sync:    {st['last_sync'] or 'never'}")
    for path, why in st["failed"].items():
        console.print(f"[red]failed[/]   {path}: {why}", highlight=False)
    for path, why in st["warnings"].items():
        console.print(f"[yellow]warning[/]  {path}: {why}", highlight=False)


@app.command("config")
def show_config(vault: Optional[Path] = VaultOpt):
    """Show the effective configuration and where each value came from."""
    from .config import explain
    from .paths import app_dirs

    settings = _settings(vault)
    console = _console()
    console.print(f"config file: {app_dirs().config_file}", highlight=False)
    for key, value, source in explain(settings, cli_keys={"vault"} if vault else set()):
        console.print(f"{key:28} = {json.dumps(value, default=str):40} [dim]# {source}[/]", highlight=False)


def main() -> None:
    try:
        app()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
