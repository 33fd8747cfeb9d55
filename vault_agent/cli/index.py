"""`vault-agent index`, `search` and `status`: through the daemon serving the vault when one runs,
else in this process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .common import VaultOpt, console, local_or_daemon, open_indexer


def register(app: typer.Typer) -> None:
    app.command("index")(index)
    app.command("search")(search)
    app.command("status")(status)


def index(vault: Optional[Path] = VaultOpt, full: bool = typer.Option(False, help="Re-embed every note.")):
    """Index the vault (only what changed since last time); through the daemon when one runs."""
    settings, root, client = local_or_daemon(vault, timeout=None)
    out = console()
    if client is not None:
        try:
            with out.status(f"indexing through the running daemon at {client.base_url}"):
                answer = client.reindex(full)
        finally:
            client.close()
        report, st = answer["report"], answer["status"]
    else:
        report, st = _index_here(settings, root, full, out)
    out.print(
        f"{st['notes_indexed']}/{st['notes_total']} notes indexed, {st['chunks']} chunks "
        f"({report['indexed']} updated, {report['removed']} removed, {report['chunks_embedded']} chunks embedded, "
        f"{report['chunks_reused']} reused) in {report['seconds']:.1f}s"
    )
    if report["orphan_vectors_pruned"] or report["missing_vectors_restored"]:
        out.print(f"repaired: {report['orphan_vectors_pruned']} orphan vectors pruned, "
                  f"{report['missing_vectors_restored']} missing vectors re-embedded")
    for path, why in report["errors"].items():
        out.print(f"[yellow]skipped[/] {path}: {why}", highlight=False)
    if report["stopped"]:
        out.print("[yellow]stopped before the end[/] (the index is consistent): run `vault-agent index` "
                  "again to finish")
        raise typer.Exit(130)


def _index_here(settings, root: Path, full: bool, out) -> tuple[dict, dict]:
    """Index in this process. The first Ctrl-C stops at the next batch, leaving the index consistent."""
    import signal

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    indexer = open_indexer(settings, root)

    def stop(signum, frame):
        indexer.stop()
        signal.signal(signal.SIGINT, previous)  # a second Ctrl-C interrupts at once

    previous = signal.signal(signal.SIGINT, stop)
    try:
        with Progress(TextColumn("indexing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=out, transient=True) as bar:
            task = bar.add_task("index", total=None)
            report = indexer.reconcile(progress=lambda done, total: bar.update(task, completed=done, total=total),
                                       force=full)
        return report.to_dict(), indexer.status()
    finally:
        signal.signal(signal.SIGINT, previous)
        indexer.close()


def search(
    query: str = typer.Argument(..., help="What to look for, in your own words."),
    vault: Optional[Path] = VaultOpt,
    k: Optional[int] = typer.Option(None, "-k", min=1, help="Number of hits (default search.top_k)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Search the index; prints ranked [[note#heading]] links with a snippet."""
    settings, root, client = local_or_daemon(vault)
    k = k or settings.search.top_k
    if client is not None:
        try:
            hits = client.search(query, k)
        finally:
            client.close()
    else:
        from ..index.search import search as run_search

        indexer = open_indexer(settings, root, readonly=True)
        try:
            hits = [h.to_dict(root.name) for h in run_search(indexer, query, k)]
        finally:
            indexer.close()
    if as_json:
        print(json.dumps(hits, indent=2))
        return
    out = console()
    if not hits:
        out.print("no matches (is the vault indexed? run `vault-agent index`)")
    for n, hit in enumerate(hits, 1):
        out.print(f"[bold]{n}. {hit['link']}[/]", highlight=False)
        out.print(f"   {hit['snippet']}", highlight=False, style="dim")


def status(vault: Optional[Path] = VaultOpt, as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Index coverage, chunk count, last sync, repairs and files that failed (with why)."""
    settings, root, client = local_or_daemon(vault)
    if client is not None:
        try:
            st = {**client.status()["index"], "daemon": client.base_url}
        finally:
            client.close()
    else:
        indexer = open_indexer(settings, root, readonly=True)
        try:
            st = {**indexer.status(), "daemon": None}
        finally:
            indexer.close()
    if as_json:
        print(json.dumps(st, indent=2))
        return
    out = console()
    out.print(f"vault:        {st['vault']}", highlight=False)
    out.print(f"daemon:       {st['daemon'] or 'not running'}", highlight=False)
    syncing = "  (syncing)" if st["syncing"] else ""
    out.print(f"notes:        {st['notes_indexed']} indexed / {st['notes_total']} total{syncing}")
    out.print(f"chunks:       {st['chunks']}  (embeddings: {st['embedding_model']})")
    out.print(f"last sync:    {st['last_sync'] or 'never'}")
    if st["orphan_vectors_pruned"] or st["missing_vectors_restored"]:
        out.print(f"last repair:  {st['orphan_vectors_pruned']} orphan vectors pruned, "
                  f"{st['missing_vectors_restored']} missing vectors re-embedded")
    if st["settings_changed"]:
        out.print("[yellow]settings changed[/] (embedding model or chunk size): the index was built with "
                  "others; `vault-agent index` rebuilds it")
    for path, why in st["failed"].items():
        out.print(f"[red]failed[/]   {path}: {why}", highlight=False)
    for path, why in st["warnings"].items():
        out.print(f"[yellow]warning[/]  {path}: {why}", highlight=False)
