"""`vault-agent models list [--json]` and `vault-agent models use NAME|PATH`: the GGUF models already on
this machine, and switching the served one (through the running daemon, which swaps between
requests, else saved in config.toml for the next start)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

models_app = typer.Typer(help="GGUF models on this machine: list, use.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")


def _daemon():
    from .. import discovery
    from ..paths import app_dirs

    if discovery.read(app_dirs()) is None:  # no daemon file: skip importing the HTTP client (0.25 s)
        return None
    from ..client import ApiClient

    return ApiClient.discover(app_dirs())


@models_app.command("list")
def list_models(as_json: bool = typer.Option(False, "--json", help="Print a JSON list of objects.")):
    """Every GGUF model found: Ollama, LM Studio, the Hugging Face cache, llm.model_dirs, the bundled one."""
    from ..config import load_settings
    from ..models.catalog import list_models as catalog
    from ..train.active import configured_model

    client = _daemon()
    if client is not None:  # the daemon knows which model it serves now
        with client:
            rows = client.get("/models")["models"]
    else:
        rows = [r.to_dict() for r in catalog(load_settings(), served=configured_model())]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    _table(rows)


def _table(rows: list[dict]) -> None:
    from rich.table import Table

    from .common import console

    table = Table(show_edge=False, pad_edge=False)
    for col in ("", "name", "source", "arch", "params", "quant", "ctx", "size", "can"):
        table.add_column(col, overflow="fold")
    for r in rows:
        can = r["can"] or "[red]broken[/]"
        if r["why_not"]:
            can += f" [dim]({r['why_not']})[/]"
        table.add_row("*" if r["served"] else "", r["name"], r["source"], r["architecture"] or "",
                      _count(r["parameters"]), r["quantization"] or "", str(r["context_length"] or ""),
                      _size(r["size_bytes"]), can)
    out = console()
    out.print(table)
    if not rows:
        out.print("no GGUF models found; add a folder to llm.model_dirs or pull one with Ollama / LM Studio")


def _count(n: int | None) -> str:
    if not n:
        return ""
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def _size(n: int | None) -> str:
    return f"{n / 2**30:.2f} GiB" if n else ""


@models_app.command("use")
def use_model(model: str = typer.Argument(..., help="A name from `models list`, or a GGUF file's path.")):
    """Serve this model: checked with llama.cpp, saved as llm.model_path, switched in the running daemon."""
    from ..models.catalog import path_kind

    kind, path = path_kind(model)
    spec = str(path) if kind == "file" else model  # a path the daemon can find from its own folder
    client = _daemon()
    if client is not None:
        with client:
            result = client.post("/models/use", {"model": spec})
        how = f"the daemon switched in {result['switch_ms'] / 1000:.1f} s"
    else:
        result = _use_offline(spec)
        how = "no daemon runs: served from its next start"
    print(f"serving {result['model']['name']} ({result['model']['path']}); {how}; saved in {result['config_file']}")
    for line in (result.get("notice"), result.get("warning")):
        if line:
            print(f"note: {line}")


def _use_offline(spec: str) -> dict:
    from ..config import load_settings
    from ..models.catalog import find_model, require_servable
    from ..models.load_check import check_loads
    from ..models.switch import save_choice
    from ..paths import app_dirs
    from ..train.active import Adapters

    info = require_servable(find_model(spec, load_settings()))
    check_loads(Path(info.path))
    notice = Adapters(app_dirs()).drop_foreign(Path(info.path))
    return {"model": info.to_dict(), "notice": notice, **save_choice(info)}
