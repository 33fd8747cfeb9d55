"""Changing one setting in config.toml (`models use` writes llm.model_path), keeping the user's
comments, order and other settings (tomlkit). The write is atomic: a crash leaves the old file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import ConfigError


def set_setting(path: Path, key: str, value: Any) -> None:
    """Set `key` ("llm.model_path") to `value` in the TOML file at `path` (created if missing)."""
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    try:
        doc = tomlkit.parse(path.read_text()) if path.exists() else tomlkit.document()
    except (OSError, TOMLKitError) as e:
        raise ConfigError(f"cannot update {path}: {e}; fix or remove the file") from None
    *tables, name = key.split(".")
    table = doc
    for part in tables:
        if part not in table:
            table[part] = tomlkit.table()
        table = table[part]
    table[name] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(tomlkit.dumps(doc))
    os.replace(tmp, path)


def env_override(key: str) -> str | None:
    """The VAULT_AGENT_* variable that overrides `key` over config.toml, if one is set."""
    from .config import ENV_PREFIX

    var = ENV_PREFIX + key.replace(".", "__").upper()
    return var if var in os.environ else None
