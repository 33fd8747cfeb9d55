"""Which adapter version is served: <data>/adapters/active.json, plus the versions served before it,
which `rollback` walks back through, and `Adapters`, the one service that changes it (activate,
rollback, off, the start-up load) and lists the versions. Training never writes here; the daemon's
routes, the CLI and the gate's promotion do, through `Adapters` (adapter_control.py picks the
running daemon's, which swaps at once, or one on the files for the next start).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError
from ..paths import AppDirs
from . import registry

if TYPE_CHECKING:
    from ..llm.base import Backend

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


PLOT_NAME = "training.png"  # fit.py draws it in every version


def plot_path(dirs: AppDirs, version: str) -> Path:
    """A version's training plot; UnknownVersion when the version or its plot is missing."""
    if version not in registry.versions(dirs):
        raise UnknownVersion(f"no adapter version {version!r}")
    path = registry.adapters_dir(dirs) / version / PLOT_NAME
    if not path.is_file():
        raise UnknownVersion(f"adapter {version} has no {PLOT_NAME} (it was trained without matplotlib)")
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


@dataclass(frozen=True)
class Switched:
    """What a switch did (the body of the API's activate, rollback and off answers)."""

    active: str | None  # served now (None: the plain base model)
    previous: str | None  # served before
    swap_ms: float | None  # the live swap's duration; None: no model loaded here, saved for the next start

    def to_dict(self) -> dict:
        return asdict(self)


WinRates = Callable[[], "list[dict] | None"]  # the preference log's adapter_win_rates, None without a log


class Adapters:
    """Activate, roll back, switch off and list adapter versions. With the serving `backend` (the
    daemon's) a switch loads the new adapter into the running model between generations, then saves
    the choice; without one (the CLI when no daemon runs) it saves the choice for the next start.
    `win_rates` reads the A/B win rates for the listing (default: the preference log file)."""

    def __init__(self, dirs: AppDirs, backend: Backend | None = None, win_rates: WinRates | None = None) -> None:
        self.dirs = dirs
        self.backend = backend
        self.win_rates = win_rates or (lambda: win_rates_offline(dirs))
        self.warning: str | None = None  # why the saved adapter is not the one served (start-up fallback)
        self._switching = threading.Lock()  # one switch at a time: the swap and active.json change together

    # --- switches ----------------------------------------------------------------------

    def activate(self, version: str) -> Switched:
        """Serve this version (from the next generation on: in-flight answers finish on the old one)."""
        return self._switch(lambda state: after_activate(state, version))

    def rollback(self) -> Switched:
        """Go back to the version served before the active one (or to no adapter)."""
        return self._switch(lambda state: after_rollback(state, self.dirs))

    def off(self) -> Switched:
        """Serve the plain base model."""
        return self._switch(lambda state: after_activate(state, None))

    def _switch(self, target: Callable[[ActiveState], ActiveState]) -> Switched:
        """Serve `target(state)` and remember it. If the model refuses the adapter, the old one stays
        served and nothing is saved (UserError says why)."""
        with self._switching:
            state, _ = read_state(self.dirs)
            new = target(state)
            path = require_servable(self.dirs, new.active) if new.active else None
            swap_ms = None
            if self.backend is not None:
                swap_ms = round(self.backend.set_adapter(path, new.active), 2)
            write_state(self.dirs, new)
            self.warning = None
        return Switched(new.active, state.active, swap_ms)

    def load_saved(self) -> str | None:
        """At the daemon's start: load the saved active adapter into the backend. If its file is missing
        or llama.cpp refuses it, fall back to the previous good version (or none), save that, and keep
        a warning for /status (returned too)."""
        assert self.backend is not None, "load_saved needs the serving backend"
        state, warning = read_state(self.dirs)
        problems = [warning] if warning else []
        candidates = [state.active] + list(reversed(state.history)) if state.active else []
        for version in candidates:
            try:
                self.backend.set_adapter(require_servable(self.dirs, version), version)
            except UserError as e:
                problems.append(f"adapter {version} could not be loaded: {e}")
                continue
            if version != state.active:
                write_state(self.dirs, ActiveState(version, state.history[: state.history.index(version)]))
                problems.append(f"serving {version} instead")
            break
        else:
            if state.active is not None:
                write_state(self.dirs, ActiveState(None, []))
                problems.append("serving without an adapter")
        self.warning = "; ".join(problems) or None
        return self.warning

    # --- reading -----------------------------------------------------------------------

    def listing(self) -> dict:
        """Every version with its figures (training metrics, gate verdict with KL to the base, A/B win
        rate) and the active marker; with a backend, also what it serves now."""
        from ..feedback.store import PreferenceLogError

        try:
            win_rates = self.win_rates()
        except PreferenceLogError:  # a locked log: the versions are still worth listing
            win_rates = None
        out = _listing(self.dirs, win_rates)
        if self.backend is not None:
            out["serving"] = self.backend.adapter_version
            out["warning"] = self.warning or out["warning"]
        return out

    def comparison_pair(self) -> tuple[tuple, tuple] | None:
        """What an A/B comparison pits: the served adapter against the one served before it (or the
        plain base), as ((path, version), (path, version)); None while no adapter is served."""
        assert self.backend is not None, "comparison_pair needs the serving backend"
        current = self.backend.adapter_version
        if current is None:
            return None
        state, _ = read_state(self.dirs)
        before = previous(state, self.dirs) if state.active == current else None
        return (self.backend.adapter_path, current), (gguf_path(self.dirs, before) if before else None, before)


def _listing(dirs: AppDirs, win_rates: list[dict] | None) -> dict:
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
                "evidence": gate.get("evidence"),
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
