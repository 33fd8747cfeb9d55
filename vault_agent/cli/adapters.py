"""`vault-agent adapters list | activate VERSION | rollback | off`: through the running daemon (it
swaps at once), else by saving the choice for the next start."""

from __future__ import annotations

import json

import typer

adapters_app = typer.Typer(help="Adapter versions: list, activate, rollback, off.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(adapters_app, name="adapters")


def _switch(change) -> None:
    """Run `change(adapters)` (a switch) on the daemon's adapters or the files', and say what it did."""
    from ..paths import app_dirs
    from ..train.adapter_control import open_adapters

    with open_adapters(app_dirs()) as adapters:
        result = change(adapters)
    if result.swap_ms is not None:
        how = f"the daemon swapped in {result.swap_ms} ms"
    else:
        how = "no daemon runs: used from its next start"
    now = result.active or "no adapter (the base model)"
    print(f"serving {now} (was {result.previous or 'no adapter'}); {how}")


@adapters_app.command("list")
def list_versions(as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Versions, their pairs, gate figures (KL to the base among them), A/B win rate, and which one is active."""
    from ..paths import app_dirs
    from ..train.adapter_control import open_adapters

    with open_adapters(app_dirs()) as adapters:
        data = adapters.listing()
    if as_json:
        print(json.dumps(data, indent=2))
        return
    if not data["versions"]:
        print("no adapter versions yet: run vault-agent retrain")
    for row in data["versions"]:
        gate = row.get("gate") or {}
        held = row.get("heldout") or {}
        acc = gate.get("accuracy", held.get("accuracy_after"))
        figures = f"held-out accuracy {acc:.2f}" if isinstance(acc, (int, float)) else "not gated"
        kl = gate.get("kl_to_base")
        if isinstance(kl, (int, float)):
            figures += f"  KL to base {kl:.4f}"
        found = gate.get("evidence") or {}
        if gain := found.get("margin_gain"):
            figures += f"  margin gain {gain['mean']:+.3f} (95% {gain['low']:+.3f} to {gain['high']:+.3f})"
        figures += _ab_text(row.get("ab"))
        verdict = {True: "promoted", False: "refused", None: ""}[gate.get("promote")]
        mark = "*" if row["active"] else " "
        print(f"{mark} {row['version']}  {row.get('created') or '':<20}  {row.get('pairs') or '?':>5} pairs  "
              f"{figures}  {verdict}{'' if row['servable'] else '  (no GGUF: cannot be served)'}")
        base = row.get("base") or {}
        if base:
            assumed = " (assumed: trained before bases were recorded)" if base.get("assumed") else ""
            other = "; another base than the served model: cannot be activated" \
                if row.get("fits_served_model") is False else ""
            print(f"      base {base.get('file')} ({base.get('architecture') or '?'}){assumed}{other}")
        if gate.get("promote") is False:
            why = found.get("shortfalls") or (gate.get("reasons") or [])[1:]
            print(f"      kept as a candidate, activate it by hand if you like: {'; '.join(why)}")
    if data.get("base_ab"):
        print(f"  base model (no adapter){_ab_text(data['base_ab'])}")
    if data.get("warning"):
        print(f"warning: {data['warning']}")


def _ab_text(ab: dict | None) -> str:
    """'  A/B win rate 0.75 (3 won, 1 lost, 0 tied)' once comparisons were judged, else ''."""
    if not ab or not ab.get("decided"):
        return ""
    return f"  A/B win rate {ab['win_rate']:.2f} ({ab['won']} won, {ab['lost']} lost, {ab['tied']} tied)"


@adapters_app.command("activate")
def activate_version(version: str = typer.Argument(..., help="A version such as v0003.")):
    """Serve this version."""
    _switch(lambda adapters: adapters.activate(version))


@adapters_app.command("rollback")
def rollback():
    """Go back to the version served before the active one (or to none)."""
    _switch(lambda adapters: adapters.rollback())


@adapters_app.command("off")
def off():
    """Serve the plain base model."""
    _switch(lambda adapters: adapters.off())
