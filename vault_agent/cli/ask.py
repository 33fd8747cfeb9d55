"""`vault-agent ask`: an answer from your notes, through the daemon serving the vault when one runs,
else with the model loaded in this process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..errors import UserError
from .common import VaultOpt, console, local_or_daemon, open_indexer


def register(app: typer.Typer) -> None:
    app.command("ask")(ask)


def ask(
    question: str = typer.Argument(..., help="Your question."),
    vault: Optional[Path] = VaultOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the final answer as JSON."),
):
    """Answer from your notes: through the running daemon if there is one, else in-process."""
    settings, root, client = local_or_daemon(vault)
    events = ask_remote(client, question) if client else ask_local(settings, root, question)
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
    out = console()
    from ..index.state import syncing_note

    if note := syncing_note(final.get("index_state")):
        out.print(f"  {note}", style="yellow", highlight=False)
    for c in final["citations"]:
        out.print(f"  [{c['n']}] {c['link']}", style="dim", highlight=False)
    out.print(f"  response id {final['response_id']} (rate it with the TUI: vault-agent tui)", style="dim")


def ask_remote(client, question: str):
    """(event, data) pairs from the daemon's /ask/stream; closes the client when done."""
    try:
        yield from client.ask_stream(question)
    finally:
        client.close()


def ask_local(settings, root: Path, question: str):
    """The same events, from an index and a model opened here."""
    from ..feedback.store import PreferenceLog
    from ..llm.backend import LlamaBackend
    from ..paths import app_dirs
    from ..rag import RagService

    from ..train.active import Adapters

    indexer = open_indexer(settings, root)
    try:
        indexer.reconcile()
        dirs = app_dirs()
        with LlamaBackend(settings.llm) as backend, PreferenceLog(dirs.preference_db) as log:
            # the active adapter, as the daemon would serve it: your ratings show here too
            if warning := Adapters(dirs, backend).load_saved():
                console(stderr=True).print(f"[yellow]{warning}[/]", highlight=False)
            rag = RagService(indexer, backend, log, settings)
            for kind, value in rag.stream(question):
                yield kind, ({"text": value} if kind == "token" else value.to_dict())
    finally:
        indexer.close()
