"""After `make run` (which passes --vault and configures none), `status` and `search` without --vault
use the vault the running daemon serves instead of failing with 'no vault configured'."""

from __future__ import annotations

import json

import pytest

from vault_agent.cli.common import resolve
from vault_agent.errors import UserError
from vault_agent.paths import app_dirs


def test_no_configured_vault_falls_back_to_the_daemons_vault(make_vault):
    vault = make_vault({"Note.md": "# Note\n\ntext\n"})
    with pytest.raises(UserError, match="no vault configured"):
        resolve(None)
    dirs = app_dirs().ensure()
    dirs.daemon_file.write_text(json.dumps({"url": "http://127.0.0.1:1", "pid": 1, "vault": str(vault)}))
    settings, root = resolve(None)
    assert root == vault.resolve()
    other = make_vault({"Other.md": "# Other\n"}, name="other")
    assert resolve(other)[1] == other.resolve()  # --vault still wins
