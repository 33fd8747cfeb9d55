"""Shared by serve_bench.py and feedback_bench.py: a real `vault-agent serve` in a subprocess with
its own VAULT_AGENT_HOME, and watching how busy the (shared, noisy) machine is while we measure."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENV_BIN = Path(sys.executable).parent
CLI = VENV_BIN / "vault-agent"

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def daemon_env(home: Path, **settings: str) -> dict[str, str]:
    """This process's environment without VAULT_AGENT_* settings, plus `settings` (env names)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_AGENT_")}
    env.update({"VAULT_AGENT_HOME": str(home), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
    env.update(settings)
    return env


def proc_status_kb(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _all_cpu_seconds() -> dict[int, float]:
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                out[int(d.name)] = proc_cpu_seconds(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def busy_processes(exclude: set[int], window: float = 1.0) -> list[str]:
    """Other processes using >= 20% of a core over `window` s (e.g. a concurrent test run or
    benchmark): noise worth reporting next to the timings."""
    before = _all_cpu_seconds()
    time.sleep(window)
    after = _all_cpu_seconds()
    busy = []
    for pid, cpu in after.items():
        share = (cpu - before.get(pid, cpu)) / window
        if pid not in exclude and share >= 0.2:
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                cmd = "?"
            busy.append(f"{pid} {share:.0%} {cmd[:100].strip()}")
    return busy


def _cpu_times() -> tuple[int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields), fields[3] + fields[4]  # total, idle + iowait


def cpu_busy(window: float = 1.0) -> float:
    """Fraction of the whole machine's CPU time in use over `window` seconds."""
    t0, i0 = _cpu_times()
    time.sleep(window)
    t1, i1 = _cpu_times()
    return round(1 - (i1 - i0) / max(t1 - t0, 1), 3)


def wait_quiet(max_wait: float, threshold: float = 0.15, window: float = 2.0) -> dict:
    """Wait (up to max_wait s) until the machine is < threshold busy over `window`: on a shared 2-core
    box a concurrent test run or benchmark would otherwise time-slice llama.cpp's threads."""
    t0 = time.monotonic()
    busy = cpu_busy(window)
    while busy >= threshold and time.monotonic() - t0 < max_wait:
        busy = cpu_busy(window)
    return {"waited_s": round(time.monotonic() - t0, 1), "cpu_busy": busy, "quiet": busy < threshold}


class NoiseMonitor:
    """Samples, once a second, how much CPU the rest of the machine uses (all processes except ours
    and the daemon), per phase: timings taken while another job ran are flagged in the results."""

    def __init__(self, interval: float = 1.0):
        self.interval = interval
        self.ours: set[int] = {os.getpid()}
        self.phase = "start"
        self.samples: dict[str, list[float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "NoiseMonitor":
        self._thread.start()
        return self

    def _run(self) -> None:
        before, t_before = _cpu_times(), _all_cpu_seconds()
        while not self._stop.wait(self.interval):
            after, t_after = _cpu_times(), _all_cpu_seconds()
            ticks = max(after[0] - before[0], 1)
            busy_s = ((after[0] - after[1]) - (before[0] - before[1])) / os.sysconf("SC_CLK_TCK")
            # a process of ours that exited meanwhile drops out (its last ticks count as other)
            ours_s = sum(t_after[p] - t_before.get(p, t_after[p]) for p in self.ours if p in t_after)
            wall_s = ticks / os.sysconf("SC_CLK_TCK") / (os.cpu_count() or 1)
            self.samples.setdefault(self.phase, []).append(max(0.0, (busy_s - ours_s) / wall_s))
            before, t_before = after, t_after

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return {phase: {"other_cores_mean": round(sum(v) / len(v), 2), "other_cores_max": round(max(v), 2),
                        "samples": len(v)} for phase, v in self.samples.items() if v}


class DaemonProcess:
    """`vault-agent serve --vault <vault> --port <free>` with VAULT_AGENT_HOME=<home>."""

    def __init__(self, vault: Path, home: Path, fake_model: bool = False, **settings: str):
        self.vault, self.home = vault, home
        self.fake_model = fake_model  # FakeBackend instead of llama.cpp (benchmarks/_fake_serve.py)
        self.env = daemon_env(home, **settings)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = home / "daemon.log"
        self.proc: subprocess.Popen | None = None
        self.token = ""

    def start(self, timeout: float = 300.0, monitor: NoiseMonitor | None = None) -> "DaemonProcess":
        import httpx

        self.home.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with self.log_path.open("wb") as log:  # the child keeps its own copy of the descriptor
            serve = ([sys.executable, str(HERE / "_fake_serve.py")] if self.fake_model else [str(CLI), "serve"])
            self.proc = subprocess.Popen([*serve, "--vault", str(self.vault), "--port", str(self.port)],
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT)
        if monitor is not None:
            monitor.ours.add(self.proc.pid)
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=5) as http:
            while True:
                self._check_alive()
                try:
                    if http.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                self._check_deadline(deadline, "/health")
                time.sleep(0.1)
            self.health_s = time.perf_counter() - t0
            self.token = subprocess.run([str(CLI), "token"], env=self.env, capture_output=True, text=True,
                                        check=True).stdout.strip()
            headers = {"Authorization": f"Bearer {self.token}"}
            while True:
                self._check_alive()
                index = http.get("/status", headers=headers).raise_for_status().json()["index"]
                if index["last_sync"] and index["notes_total"] > 0 and index["notes_indexed"] == index["notes_total"]:
                    self.index = index
                    break
                self._check_deadline(deadline, "the start-up index")
                time.sleep(0.2)
        self.ready_s = time.perf_counter() - t0
        self.wait_idle(deadline)
        return self

    def wait_idle(self, deadline: float, busy_cpu: float = 0.05, window: float = 0.5) -> None:
        """Until the daemon uses < busy_cpu of a core over `window` s: the embedding model loads after
        the index is reported complete, and we must not time requests against that."""
        last = proc_cpu_seconds(self.proc.pid)
        while time.monotonic() < deadline:
            time.sleep(window)
            now = proc_cpu_seconds(self.proc.pid)
            if now - last < busy_cpu * window:
                return
            last = now

    def client(self, timeout: float = 600.0):
        import httpx

        return httpx.Client(base_url=self.url, timeout=timeout, headers={"Authorization": f"Bearer {self.token}"})

    def peak_rss_mb(self) -> dict:
        hwm, rss = proc_status_kb(self.proc.pid, "VmHWM"), proc_status_kb(self.proc.pid, "VmRSS")
        return {"peak_rss_mb": round(hwm / 1024, 1) if hwm else None,
                "rss_now_mb": round(rss / 1024, 1) if rss else None}

    def stop(self, timeout: float = 60.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown, then Daemon.close()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def _check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log_tail()}")

    def _check_deadline(self, deadline: float, what: str) -> None:
        if time.monotonic() > deadline:
            self.stop()
            raise RuntimeError(f"daemon not ready ({what}) in time:\n{self.log_tail()}")

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def copy_sample_vault(root: Path) -> Path:
    vault = root / "sample_vault"
    shutil.copytree(REPO / "sample_vault", vault)
    return vault


