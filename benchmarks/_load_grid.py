"""Decode speed idle and under indexing load, for serve_bench.py (issue 12).

Two kinds of load:
- indexing inside the daemon: synthetic notes written into the served vault, so the daemon's own
  watcher and indexer embed them while the questions are answered (what a user sees right after
  dropping a folder of notes into the vault);
- an embedder in another process (the same Embedder and batch size as the indexer, looping over
  synthetic chunks): the load beside raw llama-cpp-python, and a load the daemon cannot pause.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent

EMBED_LOOP = """
import sys
sys.path.insert(0, {repo!r})
sys.path.insert(0, {bench!r})
from synthetic_vault import VaultGen
from vault_agent.config import IndexSettings
from vault_agent.index.embedder import Embedder
gen = VaultGen(7, 64)
texts = [gen.note(i)[1][:1000] for i in range(64)]
embedder = Embedder(IndexSettings())
embedder.embed(texts[:2])
print("ready", flush=True)
while True:
    embedder.embed(texts)
"""


@contextmanager
def embedder_process():
    """An embedding loop in a child process, started and warm before the block runs."""
    code = EMBED_LOOP.format(repo=str(HERE.parent), bench=str(HERE))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"the embedding load did not start (exit {proc.poll()})")
        time.sleep(1.0)  # past the first batches' allocations
        yield proc
    finally:
        proc.kill()
        proc.wait()


def add_notes(vault: Path, n: int, seed: int = 11) -> int:
    """Write n synthetic notes under vault/_load/ (the daemon's watcher picks them up)."""
    sys.path.insert(0, str(HERE))
    from synthetic_vault import VaultGen

    target = vault / "_load"
    target.mkdir(exist_ok=True)
    return sum(VaultGen(seed, n).write(target))


def index_progress(http) -> dict:
    index = http.get("/status").raise_for_status().json()["index"]
    return {k: index.get(k) for k in ("notes_indexed", "notes_total", "chunks")}


def wait_for_indexing(http, before_total: int, timeout: float = 60.0) -> dict:
    """Until the daemon has seen the new notes and is embedding them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = index_progress(http)
        if (now["notes_total"] or 0) > before_total and (now["notes_indexed"] or 0) > before_total:
            return now
        time.sleep(0.2)
    raise RuntimeError(f"the daemon did not start indexing the added notes in {timeout:.0f} s: {now}")


def run_raw_child(script: str, job: dict, root: Path, name: str, policy: str | None, timeout: float) -> dict:
    """serve_bench's --raw-child in a fresh process with the given OMP_WAIT_POLICY (None: libgomp's
    default); job["load"] starts the embedder process beside it."""
    job_path, out_path = root / f"{name}_job.json", root / f"{name}_out.json"
    job_path.write_text(json.dumps(job))
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    # its own process group, so a timeout also kills the embedder process it started
    child = subprocess.Popen([sys.executable, script, "--raw-child", str(job_path), str(out_path)], env=env,
                             start_new_session=True)
    try:  # spinning threads collapse when another job holds a core: bound the damage
        rc = child.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        return {"error": f"killed after {timeout:.0f} s"}
    return json.loads(out_path.read_text()) if rc == 0 else {"error": f"exit code {rc}"}
