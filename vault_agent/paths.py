"""Where vault-agent keeps its files.

platformdirs picks the per-user config/data/state dirs; VAULT_AGENT_HOME moves all of them
under one folder (tests and portable installs use it).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

APP_NAME = "vault-agent"


@dataclass(frozen=True)
class AppDirs:
    config: Path
    data: Path
    state: Path

    @property
    def config_file(self) -> Path:
        return self.config / "config.toml"

    @property
    def index_dir(self) -> Path:
        return self.data / "index"

    def index_for(self, vault: Path) -> Path:
        """One vault's index directory (catalog, vectors, writer lock, owner.json)."""
        return self.index_dir / index_key(vault)

    @property
    def preference_db(self) -> Path:
        return self.data / "preferences.sqlite"

    @property
    def token_file(self) -> Path:
        return self.state / "token"

    @property
    def daemon_file(self) -> Path:
        """Written by a running daemon: where clients find it (url, pid)."""
        return self.state / "daemon.json"

    def ensure(self) -> "AppDirs":
        for d in (self.config, self.data, self.state):
            d.mkdir(parents=True, exist_ok=True)
        return self


def index_key(vault: Path) -> str:
    return f"{vault.name}-{hashlib.sha1(str(vault).encode()).hexdigest()[:8]}"


def app_dirs() -> AppDirs:
    home = os.environ.get("VAULT_AGENT_HOME")
    if home:
        root = Path(home).expanduser()
        return AppDirs(config=root / "config", data=root / "data", state=root / "state")
    import platformdirs

    return AppDirs(
        config=Path(platformdirs.user_config_dir(APP_NAME)),
        data=Path(platformdirs.user_data_dir(APP_NAME)),
        state=Path(platformdirs.user_state_dir(APP_NAME)),
    )
