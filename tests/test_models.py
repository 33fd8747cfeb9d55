"""`models list` / `models use` and the daemon's model switch (issue 18): the stores laid out as Ollama,
LM Studio and the Hugging Face cache lay them out, in a fake HOME, with tiny real GGUF files; broken
entries (a manifest pointing at a missing blob, a truncated file, a projector, not a GGUF) listed with
their reason; the API on a real daemon (uvicorn on loopback, the fake chat backend); the CLI in a
subprocess. The switch with llama.cpp itself is in test_models_switch.py (slow)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from tiny_gguf import write_gguf

from vault_agent.paths import AppDirs
from vault_agent.train import active, registry


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """A fake HOME with one model in each store, broken entries beside them, and a model_dirs folder."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    for var in ("OLLAMA_MODELS", "HF_HOME", "HF_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    # Ollama: manifests/<registry>/<namespace>/<model>/<tag> -> blobs/sha256-<hex>
    ollama = home / ".ollama" / "models"
    blob = write_gguf(ollama / "blobs" / ("sha256-" + "a" * 64), arch="qwen2", file_type=15, context=32768)

    def manifest(parts: str, digest: str) -> None:
        path = ollama / "manifests" / parts
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"schemaVersion": 2, "layers": [
            {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "c" * 64},
            {"mediaType": "application/vnd.ollama.image.model", "digest": digest}]}))

    manifest("registry.ollama.ai/library/qwen2.5/7b", "sha256:" + "a" * 64)
    manifest("registry.ollama.ai/someone/tuned/latest", "sha256:" + "b" * 64)  # its blob is missing
    # LM Studio, through ~/.lmstudio-home-pointer, with a vision projector beside the model
    lms_home = tmp_path / "elsewhere" / "lmstudio"
    (home / ".lmstudio-home-pointer").parent.mkdir(parents=True, exist_ok=True)
    (home / ".lmstudio-home-pointer").write_text(str(lms_home))
    write_gguf(lms_home / "models" / "lmstudio-community" / "Phi-3-GGUF" / "Phi-3-mini-Q8_0.gguf",
               arch="phi3", file_type=7)
    write_gguf(lms_home / "models" / "lmstudio-community" / "Phi-3-GGUF" / "mmproj-model-f16.gguf",
               arch="clip", kind="mmproj", chat=False)
    # the Hugging Face cache: snapshots hold symlinks into blobs/; a split model in two parts
    repo = home / ".cache" / "huggingface" / "hub" / "models--bartowski--Llama-3.2-1B-Instruct-GGUF"
    target = write_gguf(repo / "blobs" / "1234abcd", arch="llama", file_type=17)
    snap = repo / "snapshots" / "0123456789abcdef"
    snap.mkdir(parents=True)
    (snap / "Llama-3.2-1B-Instruct-Q5_K_M.gguf").symlink_to(target)
    for i in (1, 2):
        write_gguf(snap / f"big-0000{i}-of-00002.gguf", arch="llama", split=(i - 1, 2), rows=64)
    # llm.model_dirs: a second path to the Ollama blob, a truncated download, a projector, not a GGUF,
    # an embedding model, an architecture the loop does not train
    mine = tmp_path / "my-models"
    mine.mkdir()
    (mine / "qwen-link.gguf").symlink_to(blob)
    good = write_gguf(tmp_path / "full.gguf", arch="gemma2")
    (mine / "half.gguf").write_bytes(good.read_bytes()[:-200])
    write_gguf(mine / "mmproj-vision.gguf", arch="clip", kind="mmproj", chat=False)
    (mine / "notes.gguf").write_text("not a model at all, just text with a .gguf name")
    write_gguf(mine / "embed.gguf", arch="bert", chat=False, extra={"bert.pooling_type": 1})
    write_gguf(mine / "falcon.gguf", arch="falcon")
    monkeypatch.setenv("VAULT_AGENT_LLM__MODEL_DIRS", json.dumps([str(mine)]))
    return {"home": home, "mine": mine, "blob": blob, "good": good}


def rows_by_name(rows):
    return {r.name if hasattr(r, "name") else r["name"]: r for r in rows}


def test_every_store_is_listed_with_what_the_loop_can_do(machine):
    from vault_agent.config import load_settings
    from vault_agent.models.catalog import list_models

    rows = rows_by_name(list_models(load_settings()))
    qwen = rows["qwen2.5:7b"]  # named as `ollama list` names it
    assert (qwen.source, qwen.architecture, qwen.quantization, qwen.context_length) == ("ollama", "qwen2", "Q4_K_M", 32768)
    assert qwen.can == "serve+train" and qwen.parameters == 32 * 16 + 16 and qwen.chat_template
    assert qwen.path == str(machine["blob"])
    broken = rows["someone/tuned:latest"]
    assert broken.can is None and "missing blob" in broken.why_not
    phi = rows["lmstudio-community/Phi-3-GGUF/Phi-3-mini-Q8_0.gguf"]
    assert (phi.source, phi.quantization, phi.can) == ("lmstudio", "Q8_0", "serve+train")
    assert not any("mmproj-model" in name for name in rows)  # LM Studio's projector: skipped
    llama = rows["bartowski/Llama-3.2-1B-Instruct-GGUF/Llama-3.2-1B-Instruct-Q5_K_M.gguf"]
    assert (llama.source, llama.quantization) == ("huggingface", "Q5_K_M")
    split = rows["bartowski/Llama-3.2-1B-Instruct-GGUF/big-00001-of-00002.gguf"]
    assert split.parts == 2 and split.parameters == 2 * (64 * 16 + 16) and split.can == "serve+train"
    assert not any("00002-of" in name for name in rows)  # one row per split model
    # llm.model_dirs: the link to the Ollama blob is the same file: listed once, under Ollama's name
    assert "qwen-link.gguf" not in rows
    assert rows["half.gguf"].can is None and rows["half.gguf"].why_not.startswith("truncated")
    assert rows["mmproj-vision.gguf"].why_not == "a vision projector (mmproj), not a chat model"
    assert rows["notes.gguf"].why_not == "not a GGUF file (no GGUF magic number)"
    assert rows["embed.gguf"].why_not == "an embedding model, not a chat model"
    falcon = rows["falcon.gguf"]
    assert falcon.can == "serve" and "architecture 'falcon' is not one the loop trains" in falcon.why_not
    assert rows["bundled"].source == "bundled" and rows["bundled"].can == "serve+train"


def test_ollama_models_dir_and_a_missing_split_part(machine, monkeypatch, tmp_path):
    from vault_agent.config import load_settings
    from vault_agent.models.catalog import list_models

    store = tmp_path / "ollama-store"
    shutil.copytree(machine["home"] / ".ollama" / "models", store)
    shutil.rmtree(machine["home"] / ".ollama")
    monkeypatch.setenv("OLLAMA_MODELS", str(store))
    (machine["home"] / ".cache/huggingface/hub/models--bartowski--Llama-3.2-1B-Instruct-GGUF/snapshots/"
                       "0123456789abcdef/big-00002-of-00002.gguf").unlink()
    rows = rows_by_name(list_models(load_settings()))
    assert rows["qwen2.5:7b"].path == str(store / "blobs" / ("sha256-" + "a" * 64))
    split = rows["bartowski/Llama-3.2-1B-Instruct-GGUF/big-00001-of-00002.gguf"]
    assert split.can is None and split.why_not == "split model with part 2 of 2 missing"


def test_find_and_refuse(machine):
    from vault_agent.config import load_settings
    from vault_agent.models.catalog import UnknownModel, UnusableModel, find_model, require_servable

    settings = load_settings()
    assert find_model("qwen2.5:7b", settings).path == str(machine["blob"])
    assert find_model(str(machine["good"]), settings).architecture == "gemma2"  # any path
    with pytest.raises(UnknownModel, match="no model named 'llama9:70b'"):
        find_model("llama9:70b", settings)
    for name, why in (("half.gguf", "truncated"), ("mmproj-vision.gguf", "vision projector"),
                      ("someone/tuned:latest", "missing blob"), ("embed.gguf", "not a chat model")):
        with pytest.raises(UnusableModel, match=why):
            require_servable(find_model(name, settings))


def cli(args, home, env=None, timeout=180):
    full = {**os.environ, "VAULT_AGENT_HOME": str(home), "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "vault_agent.cli", *args], env=full, capture_output=True,
                          text=True, timeout=timeout)


def test_cli_list_json_and_use_without_a_daemon(machine, agent_home, tmp_path, bundled_gguf):
    listed = cli(["models", "list", "--json"], agent_home)
    assert listed.returncode == 0, listed.stderr
    rows = rows_by_name(json.loads(listed.stdout))
    assert rows["qwen2.5:7b"]["can"] == "serve+train" and rows["bundled"]["served"] is True
    table = cli(["models", "list"], agent_home, env={"COLUMNS": "250"})
    assert table.returncode == 0 and "qwen2.5:7b" in table.stdout and "missing blob" in table.stdout

    config = agent_home / "config" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("# my settings\n[llm]\nn_ctx = 1024  # small\n")
    before = config.read_text()
    for bad, why in (("half.gguf", "truncated"), ("mmproj-vision.gguf", "vision projector"),
                     ("nope:1b", "no model named")):  # the other refusals: test_find_and_refuse
        r = cli(["models", "use", bad], agent_home)
        assert r.returncode == 2 and why in r.stderr and len(r.stderr.strip().splitlines()) == 1, (bad, r.stderr)
        assert config.read_text() == before
    # a real chat model (the bundled one under another name): llama.cpp checks it, the choice is saved
    other = tmp_path / "other" / "My-Model.gguf"
    other.parent.mkdir()
    other.symlink_to(bundled_gguf)
    r = cli(["models", "use", str(other)], agent_home)
    assert r.returncode == 0, r.stderr
    assert "no daemon runs" in r.stdout
    saved = config.read_text()
    assert saved.startswith("# my settings") and "n_ctx = 1024  # small" in saved
    assert f'model_path = "{other}"' in saved
    r = cli(["models", "use", "bundled"], agent_home)
    assert r.returncode == 0 and 'model_path = "bundled"' in config.read_text()


def make_version(dirs: AppDirs, version: str, base_file: Path | None) -> None:
    from vault_agent.models.fingerprint import base_record

    vdir = registry.adapters_dir(dirs) / version
    vdir.mkdir(parents=True)
    (vdir / active.GGUF_NAME).write_bytes(b"GGUF fake adapter for the FakeBackend")
    if base_file is not None:
        registry.write_json(vdir / active.BASE_NAME, base_record(base_file))


def test_adapters_remember_their_base_and_a_switch_turns_off_a_foreign_one(tmp_path, bundled_gguf):
    from vault_agent.llm.fake import FakeBackend

    model_a = write_gguf(tmp_path / "a.gguf", arch="qwen2")
    model_b = write_gguf(tmp_path / "b.gguf", arch="llama", rows=48)
    dirs = AppDirs(tmp_path / "c", tmp_path / "d", tmp_path / "s")
    make_version(dirs, "v0001", model_a)
    make_version(dirs, "v0002", model_b)
    make_version(dirs, "v0003", None)  # trained before bases were recorded: counts as the bundled model's
    backend = FakeBackend()
    backend.switch_model(model_a)
    adapters = active.Adapters(dirs, backend)
    assert adapters.activate("v0001").active == "v0001"
    with pytest.raises(active.OtherBase, match="adapter v0002 was trained on another base model, b.gguf \\(llama\\)"):
        adapters.activate("v0002")
    with pytest.raises(active.OtherBase, match="SmolLM2"):
        adapters.activate("v0003")
    assert backend.adapter_version == "v0001"  # a refusal changes nothing
    listing = {r["version"]: r for r in adapters.listing()["versions"]}
    assert listing["v0001"]["base"]["file"] == "a.gguf" and listing["v0001"]["fits_served_model"] is True
    assert listing["v0002"]["fits_served_model"] is False
    assert listing["v0003"]["base"]["assumed"] is True

    # the switch to B: v0001 (trained on A) is switched off, never applied to B
    ms, notice = adapters.serve_model(model_b)
    assert notice.startswith("adapter v0001 switched off: adapter v0001 was trained on another base model")
    assert (backend.model_id, backend.adapter_version) == ("b.gguf", None)
    assert active.read_state(dirs)[0].active is None
    assert adapters.activate("v0002").active == "v0002"
    # a copy of B under another name is the same model: its adapter stays
    copy = tmp_path / "b-copy.gguf"
    shutil.copy(model_b, copy)
    assert adapters.serve_model(copy)[1] is None and backend.adapter_version == "v0002"
    # the bundled model takes the unrecorded version
    adapters.serve_model(bundled_gguf)
    assert adapters.activate("v0003").active == "v0003"


def test_the_api_lists_and_switches_models(api, machine, agent_home):
    backend = api.backend
    listing = api.http.get("/models")
    assert listing.status_code == 200
    rows = rows_by_name(listing.json()["models"])
    assert rows["bundled"]["can"] == "serve+train" and listing.json()["served"] == "fake-model.gguf"
    # bad input: 4xx, one line, the model stays
    for body, status, why in (({"model": "nope:1b"}, 404, "no model named"),
                              ({"model": str(machine["mine"] / "half.gguf")}, 422, "truncated"),
                              ({"model": str(machine["mine"] / "mmproj-vision.gguf")}, 422, "vision projector"),
                              ({"model": "0" * 1000}, 404, "no model named"), ({"model": "a\u0000b"}, 404, ""),
                              ({"model": "~nosuchuser/x.gguf"}, 404, ""), ({"model": "/"}, 422, "not a file"),
                              ({"model": 5}, 422, "model"), ({"model": "x", "more": 1}, 422, "more"), ({}, 422, "")):
        r = api.http.post("/models/use", json=body)
        assert r.status_code == status and why in json.dumps(r.json()), (body, r.text)
        assert backend.model_id == "fake-model.gguf"
    try:
        r = api.http.post("/models/use", json={"model": str(machine["good"])})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"]["name"] == "full.gguf" and body["model"]["served"] and body["notice"] is None
        assert backend.model_id == "full.gguf"
        assert f'model_path = "{machine["good"]}"' in (agent_home / "config" / "config.toml").read_text()
        served = [r for r in api.http.get("/models").json()["models"] if r["served"]]
        assert [r["path"] for r in served] == [str(machine["good"])]
        assert api.http.get("/v1/models").json()["data"][0]["served_model"] == "full.gguf"
        answer = api.http.post("/ask", json={"question": "Who is Priya?"}).json()
        assert answer["model"] == "full.gguf"  # answers name the model that wrote them
    finally:
        backend.model_id, backend.model_path = "fake-model.gguf", None
        api.runtime.settings.llm.model_path = "bundled"


def test_activate_through_the_api_refuses_another_base_with_409(api, tmp_path):
    model_a = write_gguf(tmp_path / "a.gguf", arch="qwen2")
    dirs = api.runtime.dirs
    version = registry.next_version(dirs)
    make_version(dirs, version, model_a)
    backend = api.backend
    try:
        backend.model_path = write_gguf(tmp_path / "b.gguf", arch="llama", rows=40)
        r = api.http.post(f"/adapters/{version}/activate")
        assert r.status_code == 409 and "trained on another base model, a.gguf (qwen2)" in r.json()["error"]
        assert backend.adapter_version is None
    finally:
        backend.model_path = None
        shutil.rmtree(registry.adapters_dir(dirs) / version)


def test_cli_adapters_show_their_base_and_refuse_another(agent_home, tmp_path):
    from vault_agent.paths import app_dirs

    make_version(app_dirs().ensure(), "v0001", write_gguf(tmp_path / "a.gguf", arch="qwen2"))
    listed = cli(["adapters", "list"], agent_home)
    assert listed.returncode == 0, listed.stderr
    assert "base a.gguf (qwen2); another base than the served model: cannot be activated" in listed.stdout
    refused = cli(["adapters", "activate", "v0001"], agent_home)  # no daemon: checked against config's model
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "adapter v0001 was trained on another base model, a.gguf (qwen2), not on the served SmolLM2" in refused.stderr
    assert active.read_state(app_dirs())[0].active is None


def test_header_summaries_are_kept_between_runs_and_follow_file_changes(machine, agent_home):
    from vault_agent.config import load_settings
    from vault_agent.models import header_cache
    from vault_agent.models.catalog import list_models
    from vault_agent.paths import app_dirs

    first = {r.name: r.to_dict() for r in list_models(load_settings())}
    cache_file = app_dirs().state / header_cache.CACHE_NAME
    assert str(machine["blob"]) in cache_file.read_text()
    reads = []
    real = header_cache.summarise
    header_cache.summarise = lambda path: reads.append(path) or real(path)
    try:
        assert {r.name: r.to_dict() for r in list_models(load_settings())} == first
        assert [p.name for p in reads] == ["notes.gguf"]  # only the non-GGUF file is looked at again (4 bytes)
        reads.clear()
        # a file that changes is read again: an Ollama blob cut short by a failed re-pull
        data = machine["blob"].read_bytes()
        machine["blob"].write_bytes(data[:-300])
        rows = rows_by_name(list_models(load_settings()))
        assert rows["qwen2.5:7b"].why_not.startswith("truncated")
        assert sorted(p.name for p in reads) == sorted([machine["blob"].name, "notes.gguf"])
    finally:
        header_cache.summarise = real
    cache_file.write_text("{not json")  # a damaged cache is an empty one
    assert rows_by_name(list_models(load_settings()))["lmstudio-community/Phi-3-GGUF/Phi-3-mini-Q8_0.gguf"].can


def test_a_switch_whose_adapter_llama_cpp_refuses_serves_the_model_without_it(tmp_path):
    from vault_agent.errors import UserError
    from vault_agent.llm.fake import FakeBackend

    model = write_gguf(tmp_path / "a.gguf", arch="qwen2")
    dirs = AppDirs(tmp_path / "c", tmp_path / "d", tmp_path / "s")
    make_version(dirs, "v0001", model)
    backend = FakeBackend()
    backend.switch_model(model)
    adapters = active.Adapters(dirs, backend)
    adapters.activate("v0001")
    real = backend.switch_model

    def refuse_adapters(path, adapter=(None, None)):
        if adapter[0] is not None:
            raise UserError("cannot load LoRA adapter: tensor shape mismatch")
        return real(path, adapter)

    backend.switch_model = refuse_adapters
    copy = tmp_path / "a-copy.gguf"
    shutil.copy(model, copy)
    _, notice = adapters.serve_model(copy)
    assert notice == ("adapter v0001 switched off: llama.cpp refused it on the new model (cannot load LoRA adapter: "
                      "tensor shape mismatch)")
    assert (backend.model_id, backend.adapter_version) == ("a-copy.gguf", None)
    assert active.read_state(dirs)[0].active is None
