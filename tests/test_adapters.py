"""Adapters in the running model: list, activate (hot-swap between requests), rollback, off, and the
start-up fallback when the saved adapter is broken. Real GGUF LoRA files exported from PEFT adapters,
loaded by the real llama.cpp model inside a real daemon."""

from __future__ import annotations

import json
import threading

import pytest
from conftest import strong_adapter

from vault_agent.paths import AppDirs
from vault_agent.train import active, registry

QUESTION = "What do I feed my sourdough starter?"


def make_version(dirs: AppDirs, version: str, gguf_source=None, metrics=None):
    vdir = registry.adapters_dir(dirs) / version
    vdir.mkdir(parents=True)
    (vdir / "metrics.json").write_text(json.dumps(metrics or {"pairs": {"train": 12}}))
    if gguf_source is not None:
        (vdir / active.GGUF_NAME).write_bytes(gguf_source.read_bytes())
    return vdir


def test_activate_rollback_and_off_walk_the_history(tmp_path):
    dirs = AppDirs(tmp_path / "c", tmp_path / "d", tmp_path / "s")
    fake = tmp_path / "x.gguf"
    fake.write_bytes(b"gguf")
    for v in ("v0001", "v0002", "v0003"):
        make_version(dirs, v, fake)
    state = active.ActiveState()
    for v in ("v0001", "v0002", "v0003"):
        state = active.after_activate(state, v)
    assert state.to_dict() == {"active": "v0003", "history": ["v0001", "v0002"]}
    state = active.after_rollback(state, dirs)
    assert state.active == "v0002"
    state = active.after_rollback(state, dirs)
    assert state.active == "v0001"
    assert active.after_rollback(state, dirs).active is None  # then the plain base
    # a version whose GGUF is gone is skipped by rollback
    (registry.adapters_dir(dirs) / "v0002" / active.GGUF_NAME).unlink()
    state = active.after_activate(active.after_activate(active.after_activate(active.ActiveState(), "v0001"),
                                                        "v0002"), "v0003")
    assert active.after_rollback(state, dirs).active == "v0001"
    off = active.after_activate(state, None)
    assert off.active is None and off.history[-1] == "v0003"


def test_unknown_or_unservable_version_is_refused_with_a_clear_message(tmp_path):
    dirs = AppDirs(tmp_path / "c", tmp_path / "d", tmp_path / "s")
    make_version(dirs, "v0001")  # trained, but no GGUF
    with pytest.raises(active.UnknownVersion, match="no adapter version 'v0009'"):
        active.require_servable(dirs, "v0009")
    with pytest.raises(active.UnknownVersion, match="has no adapter.gguf"):
        active.require_servable(dirs, "v0001")


@pytest.fixture(scope="module")
def adapter_files(hf_base, bundled_gguf, tmp_path_factory):
    """Two real GGUF LoRA adapters for the bundled model, strong enough to change its answers."""
    from vault_agent.train.export import export_gguf_lora

    root = tmp_path_factory.mktemp("adapters")
    out = {}
    for n, seed in (("a", 1), ("b", 2)):
        strong_adapter(hf_base, root / n, ["q_proj", "v_proj"], seed=seed, scale=0.05).unload()
        export_gguf_lora(root / n, bundled_gguf, root / f"{n}.gguf")
        out[n] = root / f"{n}.gguf"
    return out


@pytest.mark.slow
def test_hot_swap_changes_answers_without_restart_and_in_flight_answers_keep_their_adapter(daemon, adapter_files):
    dirs = daemon.daemon.dirs
    make_version(dirs, "v0001", adapter_files["a"])
    make_version(dirs, "v0002", adapter_files["b"])
    http = daemon.http
    try:
        listed = http.get("/adapters").json()
        assert [r["version"] for r in listed["versions"]] == ["v0001", "v0002"]
        assert listed["active"] is None and listed["serving"] is None

        base = http.post("/ask", json={"question": QUESTION}).json()
        assert base["adapter_version"] is None

        # a stream in flight when the swap is asked for finishes on the adapter it started with
        events, swapped = [], {}
        with http.stream("POST", "/ask/stream", json={"question": QUESTION}) as r:
            lines = r.iter_lines()
            for line in lines:
                if line.startswith("event: token"):
                    break
            t = threading.Thread(target=lambda: swapped.update(http.post("/adapters/v0001/activate").json()))
            t.start()
            for line in lines:
                if line.startswith("data:"):
                    events.append(json.loads(line[5:]))
        t.join(60)
        assert events[-1]["adapter_version"] is None  # the in-flight answer: old adapter, labelled so
        assert swapped["active"] == "v0001" and swapped["swap_ms"] < 2000

        adapted = http.post("/ask", json={"question": QUESTION}).json()
        assert adapted["adapter_version"] == "v0001"
        assert adapted["answer"] != base["answer"]  # the adapter really changed what the model says
        stored = daemon.runtime.log.get_response(adapted["response_id"])
        assert stored["adapter_version"] == "v0001"
        assert http.get("/status").json()["adapter"] == "v0001"

        assert http.post("/adapters/v0002/activate").json()["previous"] == "v0001"
        assert http.post("/adapters/rollback").json()["active"] == "v0001"
        assert http.post("/adapters/off").json()["active"] is None
        again = http.post("/ask", json={"question": QUESTION}).json()
        assert again["adapter_version"] is None and again["answer"] == base["answer"]  # base restored exactly

        r = http.post("/adapters/v0042/activate")
        assert r.status_code == 404 and "v0042" in r.json()["error"]
        assert http.get("/status").json()["adapter"] is None  # a refused switch changes nothing
    finally:
        daemon.runtime.backend.set_adapter(None, None)  # the model is shared with other tests


@pytest.mark.slow
def test_broken_active_adapter_at_start_falls_back_to_the_previous_good_one(llm_backend, adapter_files, tmp_path):
    dirs = AppDirs(tmp_path / "c", tmp_path / "d", tmp_path / "s")
    make_version(dirs, "v0001", adapter_files["a"])
    broken = make_version(dirs, "v0002")
    (broken / active.GGUF_NAME).write_bytes(b"this is not a GGUF file")
    active.write_state(dirs, active.ActiveState("v0002", ["v0001"]))
    try:
        adapters = active.Adapters(dirs, llm_backend)
        warning = adapters.load_saved()
        assert llm_backend.adapter_version == "v0001"
        assert "v0002" in warning and "serving v0001 instead" in warning
        assert adapters.warning == warning and adapters.listing()["warning"] == warning
        assert active.read_state(dirs)[0].active == "v0001"  # saved, so the next start is quiet
        assert active.Adapters(dirs, llm_backend).load_saved() is None

        active_file = active.active_file(dirs)
        active_file.write_text("{not json")
        warning = adapters.load_saved()
        assert "unreadable" in warning
    finally:
        llm_backend.set_adapter(None, None)


@pytest.mark.slow
def test_swaps_under_load_fail_no_request_and_each_answer_matches_the_version_it_names(daemon, adapter_files):
    """Two clients keep asking while adapters are activated, rolled back and switched off. Every
    request succeeds, and every answer is exactly the (deterministic) answer of the version it names."""
    dirs = daemon.daemon.dirs
    for v, f in (("v0001", adapter_files["a"]), ("v0002", adapter_files["b"])):
        if not (registry.adapters_dir(dirs) / v).exists():
            make_version(dirs, v, f)
    http = daemon.http
    ask = {"question": QUESTION, "k": 1}
    backend = daemon.runtime.backend
    # Prompt-prefix reuse makes llama.cpp evaluate the prompt in different batch splits, and with a
    # LoRA adapter that moves logits by rounding (enough to flip a sampled token now and then), so
    # exact-text checks need a fresh prompt evaluation per request.
    backend.fresh_kv_each_request = True
    try:
        expected = {}
        for v in (None, "v0001", "v0002"):
            http.post(f"/adapters/{v}/activate" if v else "/adapters/off").raise_for_status()
            expected[v] = http.post("/ask", json=ask).json()["answer"]
        assert len(set(expected.values())) == 3, "the adapters must give three different answers"

        import httpx

        stop, answers, failures = threading.Event(), [], []

        def client():
            with httpx.Client(base_url=daemon.url, headers=http.headers, timeout=120) as c:
                while not stop.is_set():
                    r = c.post("/ask", json=ask)
                    (answers if r.status_code == 200 else failures).append(r.json())

        threads = [threading.Thread(target=client) for _ in range(2)]
        for t in threads:
            t.start()
        swaps = []
        for route in ["/adapters/v0001/activate", "/adapters/rollback", "/adapters/v0002/activate",
                      "/adapters/v0001/activate", "/adapters/off", "/adapters/v0002/activate"]:
            r = http.post(route)
            assert r.status_code == 200, r.text
            swaps.append(r.json()["swap_ms"])
            threading.Event().wait(0.5)
        stop.set()
        for t in threads:
            t.join(120)
        assert not failures, failures[:2]
        assert len(answers) >= 6
        versions = {a["adapter_version"] for a in answers}
        assert len(versions) >= 2  # the load really spanned swaps
        for a in answers:
            assert a["answer"] == expected[a["adapter_version"]], a["adapter_version"]
    finally:
        backend.fresh_kv_each_request = False
        backend.set_adapter(None, None)


def test_ab_comparison_pits_the_active_adapter_against_the_previous_and_stats_keep_the_score(api, tmp_path):
    """Once versions exist, /compare answers once with the active adapter and once with the one
    before it (in random order), and the user's choices become a win rate per version."""
    import shutil

    dirs = api.daemon.dirs
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"GGUF")  # the fake backend only checks the file exists
    http = api.http
    try:
        make_version(dirs, "v0001", fake)
        make_version(dirs, "v0002", fake)
        http.post("/adapters/v0001/activate").raise_for_status()
        http.post("/adapters/v0002/activate").raise_for_status()
        wins = {"v0002": 0, "v0001": 0}
        for i in range(4):
            pair = http.post("/compare", json={"question": f"What is Project Heron? ({i})"}).json()
            a, b = pair["a"], pair["b"]
            assert {a["adapter_version"], b["adapter_version"]} == {"v0001", "v0002"}
            assert a["answer"] != b["answer"]
            want = "v0002" if i < 3 else "v0001"  # v0002 wins 3 of 4
            pick = "A" if a["adapter_version"] == want else "B"
            winner = a if pick == "A" else b
            wins[winner["adapter_version"]] += 1
            http.post(f"/compare/{pair['comparison_id']}/choice", json={"choice": pick}).raise_for_status()
        assert api.backend.adapter_version == "v0002"  # comparisons borrow v0001 for one answer only
        rates = {r["version"]: r for r in http.get("/preferences/stats").json()["adapter_win_rates"]}
        assert rates["v0002"]["won"] == wins["v0002"] and rates["v0001"]["won"] == wins["v0001"]
        assert wins == {"v0002": 3, "v0001": 1}
        assert rates["v0002"]["decided"] == 4 and rates["v0002"]["win_rate"] == 0.75

        http.post("/adapters/off").raise_for_status()
        plain = http.post("/compare", json={"question": "What is Project Heron?"}).json()
        assert plain["a"]["adapter_version"] is None and plain["b"]["adapter_version"] is None
    finally:
        http.post("/adapters/off")
        shutil.rmtree(registry.adapters_dir(dirs), ignore_errors=True)  # the daemon is shared


@pytest.mark.slow
def test_ask_without_a_daemon_answers_with_the_active_adapter(adapter_files, agent_home, sample_vault_copy):
    """`vault-agent ask` with no daemon running loads the model itself: it must serve the adapter the
    user's ratings trained and promoted, as the daemon would, not the plain base."""
    from typer.testing import CliRunner

    from vault_agent.cli import app
    from vault_agent.paths import app_dirs

    dirs = app_dirs().ensure()
    make_version(dirs, "v0001", adapter_files["a"])
    runner = CliRunner()

    def ask() -> dict:
        out = runner.invoke(app, ["ask", QUESTION, "--vault", str(sample_vault_copy), "--json"])
        assert out.exit_code == 0, out.output
        return json.loads(out.stdout)

    base = ask()
    assert base["adapter_version"] is None
    active.write_state(dirs, active.ActiveState("v0001", []))
    adapted = ask()
    assert adapted["adapter_version"] == "v0001"
    assert adapted["answer"] != base["answer"]
