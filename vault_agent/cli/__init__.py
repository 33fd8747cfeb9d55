"""`vault-agent` command line. Each module registers its commands with `register(app)`; heavy
libraries load inside the commands, so --help stays instant."""

from __future__ import annotations

import sys

import typer

from ..errors import UserError
from ..paths import private_umask
from . import adapters, ask, config, index, models, pairs, plugin, serve, train, tui
from . import eval as evaluation

app = typer.Typer(help="A local, self-improving assistant for your Obsidian vault.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False, rich_markup_mode=None)

# pairs before train: `pairs generate` joins the group pairs.py makes
for module in (index, config, serve, ask, pairs, plugin, adapters, models, train, evaluation, tui):
    module.register(app)


def main() -> None:
    private_umask()
    try:
        app()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
