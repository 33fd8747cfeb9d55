"""The one adapter switch (train/active.py `Adapters`) without a real model: in the daemon (a backend to
swap), on the files (the CLI and a promotion when no daemon runs), and over HTTP (adapter_control.py)
when one does. The real llama.cpp hot-swap is tests/test_adapters.py."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from vault_agent.errors import UserError
from vault_agent.llm.fake import FakeBackend
from vault_agent.paths import AppDirs, app_dirs
from vault_agent.train import active, registry
from vault_agent.train.adapter_control import DaemonAdapters, open_adapters


def make_versions(dirs: AppDirs, *versions: str, servable: bool = True) -> None:
    for version in versions:
        vdir = registry.adapters_dir(dirs) / version
        vdir.mkdir(parents=True)
        (vdir / "metrics.json").write_text(json.dumps({"pairs": {"train": 3}}))
        if servable:
            (vdir / active.GGUF_NAME).write_bytes(b"GGUF")  # FakeBackend only checks the file exists


@pytest.fixture
def dirs(tmp_path) -> AppDirs:
    return AppDirs(tmp_path / "c", tmp_path / "d", tmp_path / "s")


def test_a_switch_swaps_the_backend_then_saves_the_choice(dirs):
    make_versions(dirs, "v0001", "v0002")
    backend = FakeBackend()
    adapters = active.Adapters(dirs, backend, win_rates=lambda: None)

    done = adapters.activate("v0001")
    assert done.to_dict() == {"active": "v0001", "previous": None, "swap_ms": 0.0}
    assert backend.adapter_version == "v0001" and backend.adapter_path == active.gguf_path(dirs, "v0001")
    adapters.activate("v0002")
    assert adapters.comparison_pair() == ((active.gguf_path(dirs, "v0002"), "v0002"),
                                          (active.gguf_path(dirs, "v0001"), "v0001"))
    assert adapters.rollback().to_dict() == {"active": "v0001", "previous": "v0002", "swap_ms": 0.0}
    assert adapters.off().active is None and backend.adapter_version is None
    assert adapters.comparison_pair() is None
    assert active.read_state(dirs)[0].to_dict() == {"active": None, "history": ["v0001"]}  # rolled back from v0002

    listed = adapters.listing()
    assert [r["version"] for r in listed["versions"]] == ["v0001", "v0002"]
    assert listed["serving"] is None and listed["active"] is None


def test_a_refused_switch_changes_nothing(dirs):
    make_versions(dirs, "v0001")
    make_versions(dirs, "v0002", servable=False)
    backend = FakeBackend()
    adapters = active.Adapters(dirs, backend, win_rates=lambda: None)
    adapters.activate("v0001")
    for version in ("v0002", "v0042"):
        with pytest.raises(active.UnknownVersion):
            adapters.activate(version)
    assert backend.adapter_version == "v0001" and active.read_state(dirs)[0].active == "v0001"


def test_start_up_falls_back_to_a_servable_version_and_a_switch_clears_the_warning(dirs):
    make_versions(dirs, "v0001", "v0002")
    (registry.adapters_dir(dirs) / "v0002" / active.GGUF_NAME).unlink()
    active.write_state(dirs, active.ActiveState("v0002", ["v0001"]))
    backend = FakeBackend()
    adapters = active.Adapters(dirs, backend, win_rates=lambda: None)
    warning = adapters.load_saved()
    assert "serving v0001 instead" in warning and backend.adapter_version == "v0001"
    assert adapters.listing()["warning"] == warning
    adapters.off()
    assert adapters.warning is None and adapters.listing()["warning"] is None


def test_without_a_backend_a_switch_is_saved_for_the_next_start(dirs):
    make_versions(dirs, "v0001")
    adapters = active.Adapters(dirs)
    assert adapters.activate("v0001").to_dict() == {"active": "v0001", "previous": None, "swap_ms": None}
    assert active.read_state(dirs)[0].active == "v0001"
    listed = adapters.listing()
    assert "serving" not in listed and listed["versions"][0]["active"] is True


def test_the_cli_without_a_daemon_switches_the_files(agent_home):
    from vault_agent.cli.adapters import adapters_app

    dirs = app_dirs()
    make_versions(dirs, "v0001", "v0002")
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(adapters_app, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    assert run("activate", "v0001") == ("serving v0001 (was no adapter); "
                                        "no daemon runs: used from its next start\n")
    assert run("activate", "v0002").startswith("serving v0002 (was v0001)")
    assert run("rollback").startswith("serving v0001 (was v0002)")
    assert run("off").startswith("serving no adapter (the base model) (was v0001)")
    listed = json.loads(run("list", "--json"))
    assert listed["active"] is None and listed["history"] == ["v0001"]
    refused = runner.invoke(adapters_app, ["activate", "v0042"])
    assert refused.exit_code != 0 and isinstance(refused.exception, UserError)


def test_promotion_without_a_daemon_saves_the_choice(dirs):
    from vault_agent.train.promote import activate

    make_versions(dirs, "v0001")
    assert activate(dirs, "v0001") == "active from the daemon's next start"
    assert active.read_state(dirs)[0].active == "v0001"
    assert activate(dirs, "v0042").startswith("not activated: no adapter version 'v0042'")


def test_with_a_daemon_running_the_switch_goes_through_it(api):
    dirs = api.daemon.dirs
    make_versions(dirs, "v0001")
    try:
        with open_adapters(dirs) as adapters:
            assert isinstance(adapters, DaemonAdapters)
            done = adapters.activate("v0001")
            assert done.active == "v0001" and done.swap_ms is not None
            assert api.backend.adapter_version == "v0001"  # swapped in the daemon's model
            assert adapters.listing()["serving"] == "v0001"
            with pytest.raises(UserError, match="v0042"):
                adapters.activate("v0042")
            assert adapters.off().previous == "v0001"
        assert api.http.get("/status").json()["adapter_warning"] is None

        from vault_agent.train.promote import activate

        assert activate(dirs, "v0001").startswith("swapped into the running daemon in ")
        assert api.backend.adapter_version == "v0001"
        assert activate(dirs, "v0042").startswith("the running daemon refused it: no adapter version 'v0042'")
    finally:
        api.http.post("/adapters/off")
        shutil.rmtree(registry.adapters_dir(dirs), ignore_errors=True)  # the daemon is shared
