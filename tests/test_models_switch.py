"""`vault-agent models use` on a running daemon with the real llama.cpp model (issue 18): the switch
happens between requests (a streamed answer in flight finishes on the old model), later answers come
from the new model, an adapter trained on the old base is switched off (never applied to the new one),
and the choice is saved in config.toml. The "other" model is the bundled GGUF with another name in its
header: another file (another fingerprint) that llama.cpp loads as fast."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest
from conftest import FAST_LLM, REPO, start_daemon, strong_adapter

from vault_agent.train import active, registry

QUESTION = "What do I feed my sourdough starter?"


@pytest.fixture(scope="module")
def other_model(bundled_gguf, tmp_path_factory):
    data = bytearray(bundled_gguf.read_bytes())
    at = data.find(b"Smollm2 135M")
    assert 0 < at < 4096, "the bundled GGUF's general.name moved"
    data[at:at + 7] = b"Another"  # same length: the header stays valid
    path = tmp_path_factory.mktemp("other") / "Another-135M.gguf"
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def bundled_adapter(hf_base, bundled_gguf, tmp_path_factory):
    """A real GGUF LoRA for the bundled model."""
    from vault_agent.train.export import export_gguf_lora

    root = tmp_path_factory.mktemp("adapter")
    strong_adapter(hf_base, root / "a", ["q_proj", "v_proj"], seed=1, scale=0.05).unload()
    export_gguf_lora(root / "a", bundled_gguf, root / "a.gguf")
    return root / "a.gguf"


@pytest.mark.slow
def test_models_use_switches_a_running_daemon_between_requests(tmp_path, make_vault, embedder, bundled_gguf,
                                                                other_model, bundled_adapter):
    from vault_agent.config import LLMSettings
    from vault_agent.llm.backend import LlamaBackend
    from vault_agent.models.fingerprint import base_record

    home = tmp_path / "home"
    vault = make_vault({"Starter.md": "# Starter\n\nFeed the sourdough starter rye flour and water daily.\n"})
    backend = LlamaBackend(LLMSettings(**FAST_LLM))
    running = start_daemon(vault, home, embedder, backend, llm=FAST_LLM, server={"port": 0})
    try:
        dirs = running.daemon.dirs
        vdir = registry.adapters_dir(dirs) / "v0001"
        vdir.mkdir(parents=True)
        (vdir / active.GGUF_NAME).write_bytes(bundled_adapter.read_bytes())
        registry.write_json(vdir / active.BASE_NAME, base_record(bundled_gguf))
        http = running.http
        assert http.post("/adapters/v0001/activate").status_code == 200

        # a stream in flight when the switch is asked for finishes on the old model and adapter
        events, switched = [], {}
        env = {**os.environ, "VAULT_AGENT_HOME": str(home), "PYTHONPATH": str(REPO)}
        with http.stream("POST", "/ask/stream", json={"question": QUESTION}) as r:
            lines = r.iter_lines()
            for line in lines:
                if line.startswith("event: token"):
                    break
            t = threading.Thread(target=lambda: switched.update(vars(subprocess.run(
                [sys.executable, "-m", "vault_agent.cli", "models", "use", str(other_model)],
                env=env, capture_output=True, text=True, timeout=300))))
            t.start()
            for line in lines:
                if line.startswith("data:"):
                    events.append(json.loads(line[5:]))
        t.join(300)
        final = events[-1]
        assert final["answer"] and final["model"] == bundled_gguf.name and final["adapter_version"] == "v0001"
        assert switched["returncode"] == 0, switched["stderr"]
        assert "the daemon switched" in switched["stdout"]
        assert "note: adapter v0001 switched off" in switched["stdout"]  # trained on the bundled model

        after = http.post("/ask", json={"question": QUESTION}).json()
        assert after["model"] == "Another-135M.gguf" and after["adapter_version"] is None
        assert http.get("/adapters").json()["active"] is None
        assert http.get("/v1/models").json()["data"][0]["served_model"] == "Another-135M.gguf"
        refused = http.post("/adapters/v0001/activate")  # and it cannot be put back on the other model
        assert refused.status_code == 409 and "trained on another base model" in refused.json()["error"]
        assert f'model_path = "{other_model}"' in (home / "config" / "config.toml").read_text()

        # a refused switch (a truncated file) keeps the model, and says why in one line
        half = tmp_path / "half.gguf"
        half.write_bytes(bundled_gguf.read_bytes()[: 20_000_000])
        r = subprocess.run([sys.executable, "-m", "vault_agent.cli", "models", "use", str(half)], env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and "truncated" in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert http.post("/ask", json={"question": QUESTION}).json()["model"] == "Another-135M.gguf"
    finally:
        running.stop()
        backend.close()
