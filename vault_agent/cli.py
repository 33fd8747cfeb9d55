"""`vault-agent` command line. Heavy libraries load inside commands so --help stays instant."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from .errors import UserError

app = typer.Typer(help="A local, self-improving assistant for your Obsidian vault.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False, rich_markup_mode=None)

VaultOpt = typer.Option(None, "--vault", "-v", help="Vault folder (overrides the configured one).")


def _settings(vault: Optional[Path]):
    from .config import load_settings

    return load_settings(vault=vault)


def open_indexer(vault: Optional[Path], *, readonly: bool = False):
    """The vault's index, opened in this process: the writer (holds the index lock; refused with one
    line while another process writes) or, with readonly, a reader that never writes or resets."""
    from .index.indexer import Indexer
    from .paths import app_dirs

    settings, root = _vault(vault)
    dirs = app_dirs() if readonly else app_dirs().ensure()
    return Indexer(settings, root, dirs, readonly=readonly)


def _vault(vault: Optional[Path]):
    from .vault.files import resolve_vault

    settings = _settings(vault)
    if settings.vault is None and (served := _served_vault()) is not None:
        settings = _settings(served)  # none configured: the vault the running daemon serves
    return settings, resolve_vault(settings.vault)


def _served_vault() -> Path | None:
    """The vault of the daemon this user runs (its daemon file), if any; `make run` configures none."""
    from . import discovery
    from .paths import app_dirs

    info = discovery.read(app_dirs())
    return info.vault if info is not None else None


def _daemon_for(root: Path, timeout: float | None = 120.0):
    """The running daemon that owns this vault's index, or None."""
    from .client import ApiClient
    from .paths import app_dirs

    return ApiClient.for_vault(app_dirs(), root, timeout=timeout)


def _console():
    from rich.console import Console

    return Console()


@app.command()
def index(vault: Optional[Path] = VaultOpt, full: bool = typer.Option(False, help="Re-embed every note.")):
    """Index the vault (only what changed since last time); through the daemon when one runs."""
    _, root = _vault(vault)
    console = _console()
    client = _daemon_for(root, timeout=None)
    if client is not None:
        try:
            with console.status(f"indexing through the running daemon at {client.base_url}"):
                out = client.reindex(full)
        finally:
            client.close()
        report, st = out["report"], out["status"]
    else:
        report, st = _index_here(vault, full, console)
    console.print(
        f"{st['notes_indexed']}/{st['notes_total']} notes indexed, {st['chunks']} chunks "
        f"({report['indexed']} updated, {report['removed']} removed, {report['chunks_embedded']} chunks embedded, "
        f"{report['chunks_reused']} reused) in {report['seconds']:.1f}s"
    )
    if report["orphan_vectors_pruned"] or report["missing_vectors_restored"]:
        console.print(f"repaired: {report['orphan_vectors_pruned']} orphan vectors pruned, "
                      f"{report['missing_vectors_restored']} missing vectors re-embedded")
    for path, why in report["errors"].items():
        console.print(f"[yellow]skipped[/] {path}: {why}", highlight=False)
    if report["stopped"]:
        console.print("[yellow]stopped before the end[/] (the index is consistent): run `vault-agent index` "
                      "again to finish")
        raise typer.Exit(130)


def _index_here(vault: Optional[Path], full: bool, console) -> tuple[dict, dict]:
    """Index in this process. The first Ctrl-C stops at the next batch, leaving the index consistent."""
    import signal

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    indexer = open_indexer(vault)

    def stop(signum, frame):
        indexer.stop()
        signal.signal(signal.SIGINT, previous)  # a second Ctrl-C interrupts at once

    previous = signal.signal(signal.SIGINT, stop)
    try:
        with Progress(TextColumn("indexing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=console, transient=True) as bar:
            task = bar.add_task("index", total=None)
            report = indexer.reconcile(progress=lambda done, total: bar.update(task, completed=done, total=total),
                                       force=full)
        return report.to_dict(), indexer.status()
    finally:
        signal.signal(signal.SIGINT, previous)
        indexer.close()


@app.command()
def search(
    query: str = typer.Argument(..., help="What to look for, in your own words."),
    vault: Optional[Path] = VaultOpt,
    k: Optional[int] = typer.Option(None, "-k", min=1, help="Number of hits (default search.top_k)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Search the index; prints ranked [[note#heading]] links with a snippet."""
    settings, root = _vault(vault)
    k = k or settings.search.top_k
    client = _daemon_for(root)
    if client is not None:
        try:
            hits = client.search(query, k)
        finally:
            client.close()
    else:
        from .index.search import search as run_search

        indexer = open_indexer(vault, readonly=True)
        try:
            hits = [h.to_dict(root.name) for h in run_search(indexer, query, k)]
        finally:
            indexer.close()
    if as_json:
        print(json.dumps(hits, indent=2))
        return
    console = _console()
    if not hits:
        console.print("no matches (is the vault indexed? run `vault-agent index`)")
    for n, hit in enumerate(hits, 1):
        console.print(f"[bold]{n}. {hit['link']}[/]", highlight=False)
        console.print(f"   {hit['snippet']}", highlight=False, style="dim")


@app.command()
def status(vault: Optional[Path] = VaultOpt, as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Index coverage, chunk count, last sync, repairs and files that failed (with why)."""
    _, root = _vault(vault)
    client = _daemon_for(root)
    if client is not None:
        try:
            st = {**client.status()["index"], "daemon": client.base_url}
        finally:
            client.close()
    else:
        indexer = open_indexer(vault, readonly=True)
        try:
            st = {**indexer.status(), "daemon": None}
        finally:
            indexer.close()
    if as_json:
        print(json.dumps(st, indent=2))
        return
    console = _console()
    console.print(f"vault:        {st['vault']}", highlight=False)
    console.print(f"daemon:       {st['daemon'] or 'not running'}", highlight=False)
    syncing = "  (syncing)" if st["syncing"] else ""
    console.print(f"notes:        {st['notes_indexed']} indexed / {st['notes_total']} total{syncing}")
    console.print(f"chunks:       {st['chunks']}  (embeddings: {st['embedding_model']})")
    console.print(f"last sync:    {st['last_sync'] or 'never'}")
    if st["orphan_vectors_pruned"] or st["missing_vectors_restored"]:
        console.print(f"last repair:  {st['orphan_vectors_pruned']} orphan vectors pruned, "
                      f"{st['missing_vectors_restored']} missing vectors re-embedded")
    if st["settings_changed"]:
        console.print("[yellow]settings changed[/] (embedding model or chunk size): the index was built with "
                      "others; `vault-agent index` rebuilds it")
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


@app.command()
def serve(
    vault: Optional[Path] = VaultOpt,
    port: Optional[int] = typer.Option(None, "--port", "-p", help="Port (default server.port, 8765)."),
    host: Optional[str] = typer.Option(None, "--host", help="Bind address (default 127.0.0.1)."),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="Allow a non-loopback --host."),
):
    """Run the daemon: live index, local model and the HTTP API on 127.0.0.1."""
    import logging

    from .config import load_settings
    from .daemon import Daemon
    from .paths import app_dirs
    from .vault.files import resolve_vault

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = {k: v for k, v in {"port": port, "host": host}.items() if v is not None}
    settings = load_settings(vault=vault)
    if server:
        settings = load_settings(vault=vault, server=settings.server.model_copy(update=server).model_dump())
    root = resolve_vault(settings.vault)
    daemon = Daemon(settings, root, app_dirs(), allow_remote=allow_remote).build()
    console = _console()
    console.print(f"vault-agent serving [bold]{root}[/] at [bold]{daemon.url}[/]", highlight=False)
    console.print(f"model: {daemon.runtime.backend.model_id}; OpenAPI schema at {daemon.url}/openapi.json "
                  "(with the token)", highlight=False)
    console.print("token: `vault-agent token` prints it (send it as `Authorization: Bearer <token>`)")
    console.print("Ctrl-C stops.")
    try:
        daemon.serve()
    finally:
        if daemon.busy_threads():  # closed and consistent, but a native call is still running: leave now
            logging.shutdown()
            sys.stderr.flush()
            sys.stdout.flush()
            os._exit(130 if sys.exc_info()[0] is KeyboardInterrupt else 0)


@app.command()
def token():
    """Print the daemon's API token (created on first start)."""
    from .paths import app_dirs
    from .server.auth import load_or_create_token

    print(load_or_create_token(app_dirs().ensure().token_file))


@app.command()
def ask(
    question: str = typer.Argument(..., help="Your question."),
    vault: Optional[Path] = VaultOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the final answer as JSON."),
):
    """Answer from your notes: through the running daemon if there is one, else in-process."""
    from .client import ApiClient
    from .paths import app_dirs

    client = ApiClient.discover(app_dirs())
    events = _ask_remote(client, question) if client else _ask_local(question, vault)
    final = None
    for kind, data in events:
        if kind == "token" and not as_json:
            print(data["text"], end="", flush=True)
        elif kind == "error":
            raise UserError(data["error"])
        elif kind == "final":
            final = data
    if final is None:
        raise UserError("no answer came back")
    if as_json:
        print(json.dumps(final, indent=2))
        return
    print()
    console = _console()
    from .index.state import syncing_note

    if note := syncing_note(final.get("index_state")):
        console.print(f"  {note}", style="yellow", highlight=False)
    for c in final["citations"]:
        console.print(f"  [{c['n']}] {c['link']}", style="dim", highlight=False)
    console.print(f"  response id {final['response_id']} (rate it with the TUI: vault-agent tui)", style="dim")


def _ask_remote(client, question):
    try:
        yield from client.ask_stream(question)
    finally:
        client.close()


def _ask_local(question: str, vault: Optional[Path]):
    from .feedback.store import PreferenceLog
    from .llm.backend import LlamaBackend
    from .paths import app_dirs
    from .rag import RagService

    indexer = open_indexer(vault)
    indexer.reconcile()
    with LlamaBackend(indexer.settings.llm) as backend, PreferenceLog(app_dirs().preference_db) as log:
        rag = RagService(indexer, backend, log, indexer.settings)
        for kind, value in rag.stream(question):
            yield kind, ({"text": value} if kind == "token" else value.to_dict())
    indexer.close()


pairs_app = typer.Typer(help="Preference pairs for training.", no_args_is_help=True)
app.add_typer(pairs_app, name="pairs")
from .plugin_install import plugin_app  # noqa: E402  (light: typer only)
app.add_typer(plugin_app, name="plugin")
from .cli_adapters import adapters_app  # noqa: E402  (light: typer only)
app.add_typer(adapters_app, name="adapters")


@pairs_app.command("export")
def pairs_export(
    out: Path = typer.Option(..., "--out", "-o", help="JSONL file to write."),
    untrained: bool = typer.Option(False, help="Only pairs no adapter has trained on yet."),
):
    """Write pairs in TRL's conversational preference format (prompt/chosen/rejected messages)."""
    from .feedback.store import PreferenceLog
    from .paths import app_dirs

    with PreferenceLog(app_dirs().ensure().preference_db) as log:
        n = log.export_pairs_jsonl(out, untrained_only=untrained)
    print(f"wrote {n} pairs to {out}")


@pairs_app.command("stats")
def pairs_stats(as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Counts of ratings, corrections, comparisons and pairs."""
    from .feedback.store import PreferenceLog
    from .paths import app_dirs

    with PreferenceLog(app_dirs().ensure().preference_db) as log:
        st = log.stats()
    if as_json:
        print(json.dumps(st, indent=2))
        return
    console = _console()
    console.print(f"responses:        {st['responses']}")
    console.print(f"thumbs:           {st['ratings']['up']} up, {st['ratings']['down']} down "
                  f"({st['unpaired_thumbs']} unpaired)")
    console.print(f"corrections:      {st['corrections']}")
    console.print(f"comparisons:      {st['comparisons']['decided']} decided, {st['comparisons']['pending']} pending")
    by_source = ", ".join(f"{k} {v}" for k, v in st["pairs"].items())
    console.print(f"pairs:            {st['pairs_total']} ({by_source})")
    console.print(f"ready to train:   {st['pairs_untrained']}")
    console.print(f"rated today:      {st['rated_today']}")


from .cli_train import register as _register_training  # noqa: E402  (pairs generate, retrain)

_register_training(app, pairs_app)
from .cli_eval import register as _register_eval  # noqa: E402  (eval)
_register_eval(app)


@app.command()
def tui():
    """Rate answers in the terminal (needs a running daemon: vault-agent serve)."""
    from tui.app import run

    run()


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
