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


class OtherBase(UserError):
    """The adapter was trained on another base model than the one served (the API answers 409)."""

    http_status = 409


BASE_NAME = "base.json"  # the model a version was trained for (models/fingerprint.py's base_record)


def version_base(dirs: AppDirs, version: str) -> dict | None:
    """The base a version was trained on. Versions from before bases were recorded count as trained on
    the bundled model (marked "assumed"); None when even that cannot be told."""
    try:
        data = json.loads((registry.adapters_dir(dirs) / version / BASE_NAME).read_text())
        if isinstance(data, dict) and data.get("fingerprint"):
            return data
    except (OSError, ValueError):
        pass
    return _bundled_base()


def _bundled_base() -> dict | None:
    from ..config import BUNDLED
    from ..llm.backend import resolve_model_path
    from ..models.fingerprint import base_record

    try:
        return {**base_record(resolve_model_path(BUNDLED)), "assumed": True}
    except (UserError, OSError):
        return None


def base_mismatch(dirs: AppDirs, version: str, served: Path | None) -> str | None:
    """Why `version` must not be applied to the served model file, or None when it may (or when no
    file is served: the fake backend in tests)."""
    from ..models.fingerprint import base_record, same_base

    if served is None:
        return None
    trained, current = version_base(dirs, version), base_record(served)
    if trained is None or same_base(trained, current):
        return None
    arch = f" ({trained.get('architecture')})" if trained.get("architecture") else ""
    return (f"adapter {version} was trained on another base model, {trained.get('file')}{arch}, not on the served "
            f"{current['file']}; serve that model first (vault-agent models use) or retrain")


def configured_model() -> Path | None:
    """The model file the settings name (what the daemon serves at its next start), None if unresolvable."""
    from ..config import load_settings
    from ..llm.backend import resolve_model_path

    try:
        return resolve_model_path(load_settings().llm.model_path)
    except UserError:
        return None


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
        # the model adapters must have been trained on: the served file, or the configured one offline
        self.served_model: Callable[[], Path | None] = (
            (lambda: backend.model_path) if backend is not None else configured_model)
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
            if new.active and (why := base_mismatch(self.dirs, new.active, self.served_model())):
                raise OtherBase(why)
            swap_ms = None
            if self.backend is not None:
                swap_ms = round(self.backend.set_adapter(path, new.active), 2)
            write_state(self.dirs, new)
            self.warning = None
            from ..llm.merged_copy import prune_copies

            prune_copies(registry.adapters_dir(self.dirs), {v for v in (new.active, state.active) if v})
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
            if why := base_mismatch(self.dirs, version, self.served_model()):
                problems.append(f"not loaded: {why}")
                continue
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

    def drop_foreign(self, path: Path) -> str | None:
        """Without a daemon (`models use` saving the choice for the next start): switch off the saved
        active adapter if it was trained on another base than `path`; the notice saying so, or None."""
        with self._switching:
            state, _ = read_state(self.dirs)
            why = base_mismatch(self.dirs, state.active, path) if state.active else None
            if why:
                write_state(self.dirs, after_activate(state, None))
                return f"adapter {state.active} switched off: {why.split('; ')[0]}"
        return None

    def serve_model(self, path: Path) -> tuple[float, str | None]:
        """Switch the served model to `path` (between generations), keeping the active adapter only if
        it was trained on that model: one trained on another base is switched off, never applied.
        Returns the switch's milliseconds and, when an adapter was switched off, a notice saying so."""
        assert self.backend is not None, "serve_model needs the serving backend"
        with self._switching:
            state, _ = read_state(self.dirs)
            keep, notice = (None, None), None
            if state.active:
                why = base_mismatch(self.dirs, state.active, path)
                try:
                    servable = require_servable(self.dirs, state.active)
                except UserError as e:
                    why, servable = why or str(e), None
                if why:
                    notice = f"adapter {state.active} switched off: {why.split('; ')[0]}"
                else:
                    keep = (servable, state.active)
            try:
                swap_ms = self.backend.switch_model(path, keep)
            except UserError as e:
                if keep[0] is None:
                    raise  # the model itself was refused: the old one stays
                # the model loads but llama.cpp refuses the adapter on it: serve the model without it
                swap_ms = self.backend.switch_model(path, (None, None))
                notice = f"adapter {state.active} switched off: llama.cpp refused it on the new model ({e})"
            if notice:
                write_state(self.dirs, after_activate(state, None))
            self.warning = None
        return swap_ms, notice

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
        served = self.served_model()
        for row in out["versions"]:
            row["base"] = version_base(self.dirs, row["version"])
            row["fits_served_model"] = None if served is None else base_mismatch(self.dirs, row["version"], served) is None
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
