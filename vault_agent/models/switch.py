"""`models use NAME|PATH`: find the model, refuse one that cannot be served (one line, nothing
changed), switch the running model (the daemon's Adapters, which keep or switch off the active
adapter), then save the choice as llm.model_path in config.toml so the next start serves it too."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .catalog import find_model, require_servable
from .info import ModelInfo

if TYPE_CHECKING:
    from ..config import Settings
    from ..train.active import Adapters

log = logging.getLogger(__name__)
MODEL_KEY = "llm.model_path"


def setting_value(info: ModelInfo) -> str:
    """What config.toml gets: 'bundled' for the bundled model (it moves with the package), else the path."""
    from ..config import BUNDLED

    return BUNDLED if info.source == "bundled" else info.path


def save_choice(info: ModelInfo) -> dict[str, Any]:
    """Write llm.model_path; say where, and which environment variable would still win over it."""
    from ..config_file import env_override, set_setting
    from ..paths import app_dirs

    path = app_dirs().config_file
    set_setting(path, MODEL_KEY, setting_value(info))
    var = env_override(MODEL_KEY)
    return {"config_file": str(path),
            "warning": f"{var} is set and overrides config.toml at the next start; unset it" if var else None}


def use_in_daemon(spec: str, settings: Settings, adapters: Adapters) -> dict[str, Any]:
    """The running daemon serves `spec` from its next generation on (POST /models/use)."""
    info = require_servable(find_model(spec, settings))
    swap_ms, notice = adapters.serve_model(Path(info.path))
    settings.llm.model_path = setting_value(info)  # the daemon's own readers follow the served model
    if notice:
        log.warning("%s", notice)
    log.info("now serving %s (%s), switched in %.0f ms", info.name, info.path, swap_ms)
    info.served = True
    return {"model": info.to_dict(), "switch_ms": round(swap_ms, 1), "notice": notice, **save_choice(info)}
