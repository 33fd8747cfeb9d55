"""Copy the built Obsidian plugin into a vault and point it at the daemon (`vault-agent plugin install`).

The plugin is built from plugin_bridge/ (`make plugin`, or `npm ci && npm run build` there); this
copies its three release files into <vault>/.obsidian/plugins/vault-agent/ and writes the daemon URL
and token into the plugin's data.json, keeping whatever else the plugin stored there (its queue of
unsent ratings included).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from .errors import UserError

PLUGIN_ID = "vault-agent"  # manifest.json's id: Obsidian requires the folder to carry it
RELEASE_FILES = ("main.js", "manifest.json", "styles.css")
BUILD_HINT = "run `make plugin` (or `npm ci && npm run build` in plugin_bridge/)"

def default_plugin_dir() -> Path:
    """plugin_bridge/ next to the package (a source checkout or an editable install)."""
    return Path(__file__).resolve().parent.parent / "plugin_bridge"


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def install(vault: Path, plugin_dir: Path, url: str, token: str) -> Path:
    """Install into `vault`; returns the plugin folder. Raises UserError with what to do."""
    vault = vault.expanduser()
    if not vault.is_dir():
        raise UserError(f"no vault folder at {vault}")
    obsidian = vault / ".obsidian"
    if not obsidian.is_dir():
        raise UserError(f"{vault} has no .obsidian folder: open it once in Obsidian (Open folder as vault), "
                        "then run this again")
    missing = [name for name in RELEASE_FILES if not (plugin_dir / name).is_file()]
    if missing:
        raise UserError(f"the Obsidian plugin is not built ({', '.join(missing)} missing in {plugin_dir}): {BUILD_HINT}")

    dest = obsidian / "plugins" / PLUGIN_ID
    data_file = dest / "data.json"
    data: dict = {}
    if data_file.exists():
        try:
            data = json.loads(data_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise UserError(f"{data_file} is not readable JSON ({e}); fix or delete it, then run this again") from None
        if not isinstance(data, dict):
            raise UserError(f"{data_file} does not hold a JSON object; fix or delete it, then run this again")
    dest.mkdir(parents=True, exist_ok=True)
    for name in RELEASE_FILES:
        _write_atomic(dest / name, (plugin_dir / name).read_bytes())
    data.update(daemonUrl=url, token=token)
    # The token opens the daemon's API: readable by this user only.
    _write_atomic(data_file, (json.dumps(data, indent=2) + "\n").encode(), mode=0o600)
    return dest


def daemon_url() -> str:
    """The running daemon's URL if there is one, else where `vault-agent serve` will listen."""
    from . import discovery
    from .config import load_settings
    from .paths import app_dirs

    if (info := discovery.read(app_dirs())) is not None:
        return info.url
    server = load_settings().server
    host = f"[{server.host}]" if ":" in server.host else server.host
    return f"http://{host}:{server.port or 8765}"
