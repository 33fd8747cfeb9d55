"""Which adapter version is served: <data>/adapters/active.json, plus the versions served before it,
which `rollback` walks back through. Training never writes here; activation, rollback and the
gate's promotion do (through the running daemon when there is one, so it swaps at once).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..paths import AppDirs
from . import registry

GGUF_NAME = "adapter.gguf"  # the llama.cpp LoRA inside a version directory


class UnknownVersion(UserError):
    """No such adapter version, or one without a servable GGUF file (the API answers 404)."""

    http_status = 404


@dataclass
class ActiveState:
    active: str | None = None
    history: list[str] = field(default_factory=list)  # previously active versions, oldest first

    def to_dict(self) -> dict:
        return {"active": self.active, "history": self.history}


def active_file(dirs: AppDirs) -> Path:
    return registry.adapters_dir(dirs) / "active.json"


def gguf_path(dirs: AppDirs, version: str) -> Path:
    return registry.adapters_dir(dirs) / version / GGUF_NAME


def read_state(dirs: AppDirs) -> tuple[ActiveState, str | None]:
    """The saved choice and, if the file was unreadable, a warning (the state is then empty)."""
    path = active_file(dirs)
    if not path.exists():
        return ActiveState(), None
    try:
        data = json.loads(path.read_text())
        state = ActiveState(data.get("active"), [v for v in data.get("history", []) if isinstance(v, str)])
        if state.active is not None and not isinstance(state.active, str):
            raise ValueError("active is not a version name")
        return state, None
    except (OSError, ValueError, AttributeError) as e:
        return ActiveState(), f"{path} is unreadable ({e}); serving without an adapter until one is activated"


def write_state(dirs: AppDirs, state: ActiveState) -> None:
    path = active_file(dirs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".active.json.tmp")
    tmp.write_text(json.dumps(state.to_dict(), indent=2))
    os.replace(tmp, path)


def require_servable(dirs: AppDirs, version: str) -> Path:
    if version not in registry.versions(dirs):
        have = ", ".join(registry.versions(dirs)) or "none yet (run vault-agent retrain)"
        raise UnknownVersion(f"no adapter version {version!r}; versions: {have}")
    path = gguf_path(dirs, version)
    if not path.is_file():
        raise UnknownVersion(f"adapter {version} has no {GGUF_NAME} (its export failed or was removed); "
                             "pick another version")
    return path


def after_activate(state: ActiveState, version: str | None) -> ActiveState:
    """The state once `version` (None: no adapter) is served."""
    history = list(state.history)
    if state.active is not None and state.active != version:
        history = [v for v in history if v != state.active] + [state.active]
    return ActiveState(version, [v for v in history if v != version])


def previous(state: ActiveState, dirs: AppDirs) -> str | None:
    """The newest earlier version that can still be served, else None (no adapter)."""
    for version in reversed(state.history):
        if gguf_path(dirs, version).is_file():
            return version
    return None


def after_rollback(state: ActiveState, dirs: AppDirs) -> ActiveState:
    target = previous(state, dirs)
    # the rolled-back version leaves the history: rolling back twice goes further back, not forth
    history = state.history[: state.history.index(target)] if target is not None else []
    return ActiveState(target, history)


def listing(dirs: AppDirs, win_rates: list[dict] | None = None) -> dict:
    """Every version with its figures (training metrics, gate verdict with KL to the base, A/B win
    rate from `win_rates`: the preference log's adapter_win_rates) and the active marker."""
    state, warning = read_state(dirs)
    ab = {r["version"]: r for r in win_rates or []}
    rows = []
    for version in registry.versions(dirs):
        vdir = registry.adapters_dir(dirs) / version
        metrics = registry.read_metrics(dirs, version) or {}
        try:
            gate = json.loads((vdir / "gate.json").read_text())
        except (OSError, ValueError):
            gate = None
        try:
            pairs = len(json.loads((vdir / "pairs.json").read_text()).get("train", []))
        except (OSError, ValueError, AttributeError):
            pairs = None
        rows.append({
            "version": version,
            "created": metrics.get("created") or _mtime(vdir),
            "pairs": pairs,
            "heldout": metrics.get("heldout"),
            "gate": None if gate is None else {
                "promote": gate.get("promote"), "reasons": gate.get("reasons"),
                "accuracy": (gate.get("candidate") or {}).get("accuracy"),
                "margin": (gate.get("candidate") or {}).get("margin"),
                "perplexity": (gate.get("candidate") or {}).get("perplexity"),
                "kl_to_base": (gate.get("candidate") or {}).get("kl_to_base"),
            },
            "ab": ab.get(version),
            "servable": (vdir / GGUF_NAME).is_file(),
            "active": version == state.active,
        })
    return {"active": state.active, "history": state.history, "versions": rows, "base_ab": ab.get("none"),
            "warning": warning}


def win_rates_offline(dirs: AppDirs) -> list[dict] | None:
    """The A/B win rates from the preference log file, for when no daemon owns it; None without a log."""
    from ..feedback.store import PreferenceLog, PreferenceLogError

    if not dirs.preference_db.is_file():
        return None
    try:
        with PreferenceLog(dirs.preference_db) as plog:
            return plog.adapter_win_rates()
    except PreferenceLogError:  # an unreadable log: the listing still shows the versions
        return None


def _mtime(path: Path) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(path.stat().st_mtime).isoformat(timespec="minutes")


def apply_at_startup(dirs: AppDirs, backend) -> str | None:
    """Load the saved active adapter into `backend`. If its file is missing or llama.cpp refuses it,
    fall back to the previous good version (or none), save that, and return a warning for /status."""
    state, warning = read_state(dirs)
    problems = [warning] if warning else []
    candidates = [state.active] + list(reversed(state.history)) if state.active else []
    for version in candidates:
        try:
            backend.set_adapter(require_servable(dirs, version), version)
        except UserError as e:
            problems.append(f"adapter {version} could not be loaded: {e}")
            continue
        if version != state.active:
            write_state(dirs, ActiveState(version, state.history[: state.history.index(version)]))
            problems.append(f"serving {version} instead")
        break
    else:
        if state.active is not None:
            write_state(dirs, ActiveState(None, []))
            problems.append("serving without an adapter")
    return "; ".join(problems) or None


def version_pair(dirs: AppDirs, backend) -> tuple[tuple, tuple] | None:
    """What an A/B comparison pits: the served adapter against the one served before it (or the
    plain base), as ((path, version), (path, version)); None while no adapter is served."""
    current = backend.adapter_version
    if current is None:
        return None
    state, _ = read_state(dirs)
    before = previous(state, dirs) if state.active == current else None
    return (backend.adapter_path, current), (gguf_path(dirs, before) if before else None, before)
