"""One retrain at a time, and the nightly run.

The lock is an flock on <state>/train.lock, shared by the CLI, `--if-due` from a system timer and
the daemon's nightly run; the kernel releases it when the holder dies, so a crashed run never
blocks the next. The daemon never trains in its own process: it starts `vault-agent retrain
--if-due --json` as a child, so a training crash or OOM kill leaves serving untouched.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
from datetime import datetime, timedelta
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..paths import AppDirs
from .pids import pid_alive

log = logging.getLogger(__name__)


class TrainingBusy(UserError):
    """A retrain already runs (the API answers 409)."""

    http_status = 409


def lock_path(dirs: AppDirs) -> Path:
    return dirs.state / "train.lock"


def last_run_path(dirs: AppDirs) -> Path:
    return dirs.state / "train-last.json"


class TrainingLock:
    """Exclusive, non-blocking; the second holder gets TrainingBusy with who holds it."""

    def __init__(self, dirs: AppDirs):
        self.path = lock_path(dirs)
        self._fd: int | None = None

    def __enter__(self) -> "TrainingLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise TrainingBusy(f"another retrain is already running ({holder}); wait for it to finish") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}, started {datetime.now().isoformat(timespec='seconds')}".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # an empty file reads as "no run" to is_locked()
            os.close(self._fd)  # closing releases the flock
            self._fd = None


def is_locked(dirs: AppDirs) -> bool:
    """Whether a retrain runs now, without taking the lock (a probe that took it, even briefly,
    could make a starting run refuse): the holder's pid is in the file while it runs."""
    try:
        text = lock_path(dirs).read_text()
    except OSError:
        return False
    if not text.startswith("pid "):
        return False
    try:
        pid = int(text.split()[1].rstrip(","))
    except ValueError:
        return False
    return pid_alive(pid)  # a run killed with SIGKILL leaves its pid behind; the kernel freed the lock


def next_run(nightly_at: str, now: datetime | None = None) -> datetime:
    """The next local time HH:MM strictly after `now`."""
    now = now or datetime.now()
    hour, minute = (int(x) for x in nightly_at.split(":"))
    at = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return at if at > now else at + timedelta(days=1)


def record_last_run(dirs: AppDirs, info: dict[str, Any]) -> None:
    path = last_run_path(dirs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, default=str))
    os.replace(tmp, path)


def last_run(dirs: AppDirs) -> dict[str, Any] | None:
    try:
        return json.loads(last_run_path(dirs).read_text())
    except (OSError, ValueError):
        return None


CHILD_NICE = 10  # below the daemon's answers and the user's apps


def retrain_command(vault: Path | None) -> list[str]:
    """The nightly child: at low CPU priority, and held to its memory budget (a runaway fails alone;
    the daemon keeps serving). The child sets both itself: a preexec_fn is unsafe in a threaded daemon."""
    cmd = [sys.executable, "-m", "vault_agent.cli", "retrain", "--if-due", "--json", "--limit-memory",
           "--nice", str(CHILD_NICE)]
    return cmd + (["--vault", str(vault)] if vault else [])


def _why_it_ended(returncode: int, stderr: str) -> str:
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else str(-returncode)
        why = " (the kernel's out-of-memory killer, or a user)" if -returncode == signal.SIGKILL else ""
        return f"retrain was killed by {name}{why}; no version was written"
    return (stderr.strip().splitlines() or [f"exit {returncode}"])[-1]


def _stage_of(line: str) -> str | None:
    """The stage a `retrain --json` child names on stderr ("retrain: fitting the adapter"), else None."""
    return line[len("retrain: "):].strip() if line.startswith("retrain: ") else None


def run_child(dirs: AppDirs, vault: Path | None, timeout: float | None = None,
              command: list[str] | None = None, on_stage: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run one `retrain --if-due` (or `command`) in a low-priority child process and record how it
    ended. `on_stage` hears each stage the child reports on stderr while it runs."""
    started = datetime.now()
    env = {**os.environ}
    try:
        proc = subprocess.Popen(command or retrain_command(vault), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env, cwd=os.getcwd())
    except OSError as exc:
        result: dict[str, Any] = {"returncode": None, "error": f"could not start retrain: {exc}"}
    else:
        result = _follow(proc, timeout, on_stage)
    info = {"started": started.isoformat(timespec="seconds"),
            "finished": datetime.now().isoformat(timespec="seconds"), **result}
    record_last_run(dirs, info)
    return info


def _follow(proc: subprocess.Popen, timeout: float | None, on_stage: Callable[[str], None] | None) -> dict[str, Any]:
    """Read the child's stderr line by line (its stages) and its stdout (the JSON) until it ends."""
    err_lines: list[str] = []

    def read_stderr() -> None:
        for line in proc.stderr:
            err_lines.append(line)
            stage = _stage_of(line)
            if stage and on_stage is not None:
                on_stage(stage)

    reader = threading.Thread(target=read_stderr, name="retrain-stderr", daemon=True)
    reader.start()
    timed_out = threading.Event()
    killer = threading.Timer(timeout, lambda: (timed_out.set(), proc.kill())) if timeout else None
    if killer:
        killer.start()
    try:
        stdout = proc.stdout.read()
        proc.wait()
        reader.join()
    finally:
        if killer:
            killer.cancel()
    if timed_out.is_set():
        return {"returncode": None, "error": f"retrain ran past {timeout}s and was stopped"}
    result: dict[str, Any] = {"returncode": proc.returncode}
    try:
        result["result"] = json.loads(stdout) if stdout.strip() else None
    except ValueError:
        result["result"] = None
    if proc.returncode != 0:
        result["error"] = _why_it_ended(proc.returncode, "".join(err_lines))
    return result


class NightlyScheduler:
    """A daemon thread: sleep until train.nightly_at (local time), run a child retrain --if-due.
    `run_now` starts the same child at once (the API's "Retrain now"); `command` replaces the child's
    command line (tests)."""

    def __init__(self, dirs: AppDirs, vault: Path | None, train_settings, command: list[str] | None = None):
        self.dirs, self.vault, self.settings = dirs, vault, train_settings
        self.command = command
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()  # one run_now check-and-start at a time
        self.running = False
        self.progress: dict[str, Any] | None = None  # the run in progress: trigger, started, stage

    def start(self) -> None:
        if not self.settings.nightly:
            return
        self._thread = threading.Thread(target=self._loop, name="nightly-retrain", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def status(self) -> dict[str, Any]:
        progress = dict(self.progress) if self.progress else None
        if progress:
            started = datetime.fromisoformat(progress["started"])
            progress["elapsed_s"] = round((datetime.now() - started).total_seconds())
        return {"nightly": self.settings.nightly, "nightly_at": self.settings.nightly_at,
                "next_run": next_run(self.settings.nightly_at).isoformat(timespec="minutes")
                if self.settings.nightly else None,
                "running": self.running or is_locked(self.dirs), "progress": progress,
                "last_run": last_run(self.dirs)}

    def run_now(self, force: bool = False) -> dict[str, Any]:
        """Start the nightly job now in a background thread (`force`: without --if-due, so it trains
        even with little new feedback). TrainingBusy while a retrain runs, here or elsewhere."""
        with self._starting:
            if self.running or is_locked(self.dirs):
                raise TrainingBusy("a retrain is already running; wait for it to finish (GET /train/status)")
            self.running = True
            self.progress = {"trigger": "manual", "started": datetime.now().isoformat(timespec="seconds"),
                             "stage": "starting"}
        command = self.command or retrain_command(self.vault)
        if force:
            command = [arg for arg in command if arg != "--if-due"]
        threading.Thread(target=self._run, args=(command,), name="retrain-now", daemon=True).start()
        return dict(self.progress)

    def _run(self, command: list[str] | None) -> None:
        def stage(name: str) -> None:
            if self.progress is not None:
                self.progress = {**self.progress, "stage": name}

        try:
            info = run_child(self.dirs, self.vault, command=command, on_stage=stage)
            log.info("retrain: %s", info.get("error") or info.get("result"))
        except Exception:  # noqa: BLE001 - the daemon keeps serving whatever happens here
            log.exception("retrain could not run")
        finally:
            self.running = False
            self.progress = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            wait = (next_run(self.settings.nightly_at) - datetime.now()).total_seconds()
            if self._stop.wait(max(wait, 1.0)):
                return
            with self._starting:
                if self.running:  # a "Retrain now" is on it
                    continue
                self.running = True
                self.progress = {"trigger": "nightly", "started": datetime.now().isoformat(timespec="seconds"),
                                 "stage": "starting"}
            self._run(self.command)
