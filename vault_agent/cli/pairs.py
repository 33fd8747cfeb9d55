"""`vault-agent pairs export | stats` (`pairs generate` is in train.py, with the model it needs)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .common import console

pairs_app = typer.Typer(help="Preference pairs for training.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    pairs_app.command("export")(pairs_export)
    pairs_app.command("stats")(pairs_stats)
    app.add_typer(pairs_app, name="pairs")


def pairs_export(
    out: Path = typer.Option(..., "--out", "-o", help="JSONL file to write."),
    untrained: bool = typer.Option(False, help="Only pairs no adapter has trained on yet."),
):
    """Write pairs in TRL's conversational preference format (prompt/chosen/rejected messages)."""
    from ..feedback.store import PreferenceLog
    from ..paths import app_dirs

    with PreferenceLog(app_dirs().ensure().preference_db) as log:
        n = log.export_pairs_jsonl(out, untrained_only=untrained)
    print(f"wrote {n} pairs to {out}")


def read_stats() -> dict:
    """The log's counts; with no log yet, those of an empty one (made in a temporary folder, so
    this read creates nothing in the user's data folder)."""
    import tempfile

    from ..feedback.store import PreferenceLog
    from ..paths import app_dirs

    path = app_dirs().preference_db
    if path.exists():
        with PreferenceLog(path) as log:
            return log.stats()
    with tempfile.TemporaryDirectory() as empty, PreferenceLog(Path(empty) / "empty.sqlite") as log:
        return log.stats()


def pairs_stats(as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Counts of ratings, corrections, comparisons and pairs."""
    st = read_stats()
    if as_json:
        print(json.dumps(st, indent=2))
        return
    c = console()
    c.print(f"responses:        {st['responses']}")
    c.print(f"thumbs:           {st['ratings']['up']} up, {st['ratings']['down']} down "
            f"({st['unpaired_thumbs']} unpaired)")
    c.print(f"corrections:      {st['corrections']}")
    c.print(f"comparisons:      {st['comparisons']['decided']} decided, {st['comparisons']['pending']} pending")
    by_source = ", ".join(f"{k} {v}" for k, v in st["pairs"].items())
    c.print(f"pairs:            {st['pairs_total']} ({by_source})")
    c.print(f"ready to train:   {st['pairs_untrained']}")
    c.print(f"rated today:      {st['rated_today']}")
