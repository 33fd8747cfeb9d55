"""`vault-agent eval`: score answers to a question file, per adapter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..errors import UserError
from .common import VaultOpt, open_indexer, resolve


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)


def eval_command(
    questions: Path = typer.Option(..., "--questions", "-q",
                                   help="JSONL file: one {question, expected_notes, facts} per line."),
    vault: Optional[Path] = VaultOpt,
    adapter: Optional[list[str]] = typer.Option(
        None, "--adapter", "-a", metavar="VERSION",
        help="VERSION, 'active' or 'none'; give it twice to compare (default: active)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary and every answer as JSON."),
):
    """Retrieval recall@5, fact coverage, explicit citations, answer length and latency per adapter."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..evaluate import load_questions, resolve_adapter, run_eval
    from ..llm.backend import LlamaBackend
    from ..paths import app_dirs

    specs = adapter or ["active"]
    if len(set(specs)) != len(specs):
        raise UserError("the same --adapter is given twice; name each adapter once")
    qs = load_questions(questions)  # before loading anything heavy: a bad file fails at once
    dirs = app_dirs()
    choices = [resolve_adapter(s, dirs) for s in specs]
    if len({c.label for c in choices}) != len(choices):
        raise UserError("two --adapter values name the same version; name each adapter once")
    err = Console(stderr=True)
    indexer = open_indexer(*resolve(vault))
    try:
        indexer.reconcile()  # score against the vault as it is now
        with LlamaBackend(indexer.settings.llm) as backend, Progress(
            TextColumn("answering"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=err, transient=True,
        ) as bar:
            task = bar.add_task("eval", total=len(qs) * len(choices))
            report = run_eval(indexer, backend, indexer.settings, qs, choices,
                              progress=lambda done, total: bar.update(task, completed=done, total=total))
    finally:
        indexer.close()
    report["question_file"] = str(questions)
    if as_json:
        print(json.dumps(report, indent=2))
        return
    print_table(report)
    for warning in report["warnings"]:
        err.print(f"warning: {warning}", style="yellow", highlight=False)


def print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from ..evaluate import table_rows

    console = Console()
    console.print(f"{report['question_file']}: {len(report['questions'])} questions, {report['model']}",
                  highlight=False)
    table = Table()
    table.add_column("metric")
    for label in report["adapters"]:
        table.add_column(label, justify="right")
    for row in table_rows(report):
        table.add_row(*row)
    console.print(table)
