"""Where vault-agent keeps its files.

platformdirs picks the per-user config/data/state dirs; VAULT_AGENT_HOME moves all of them
under one folder (tests and portable installs use it). They hold questions, answers, corrections
and the API token: folders are 0700 and files 0600 (the daemon and the CLI set umask 077), so
other users of a shared machine read none of it.
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
        from .errors import UserError

        for d in (self.config, self.data, self.state):
            try:
                d.mkdir(parents=True, exist_ok=True, mode=0o700)
                if d.stat().st_mode & 0o077:  # made by an older version, or by hand
                    d.chmod(0o700)
            except OSError as exc:
                raise UserError(f"cannot use {d} ({exc.strerror or exc}); make it writable "
                                "(or set VAULT_AGENT_HOME to a folder that is)") from None
        return self


def private_umask() -> None:
    """Files and folders this process creates are its user's alone (0600 / 0700)."""
    os.umask(0o077)


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


def cache_dir() -> Path:
    """Files rebuilt on demand and safe to delete (the served Q8_0 model copies): $VAULT_AGENT_HOME/cache,
    else the platform's user cache dir (~/.cache/vault-agent on Linux)."""
    home = os.environ.get("VAULT_AGENT_HOME")
    if home:
        return Path(home).expanduser() / "cache"
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME))
