"""Shared fixtures: an isolated VAULT_AGENT_HOME per test, temp vaults, and the real embedding model
loaded once per session (it is the slow part of every index test)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLE_VAULT = REPO / "sample_vault"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def agent_home(tmp_path, monkeypatch) -> Path:
    for key in list(os.environ):
        if key.startswith("VAULT_AGENT_"):
            monkeypatch.delenv(key)
    home = tmp_path / "agent-home"
    monkeypatch.setenv("VAULT_AGENT_HOME", str(home))
    return home


@pytest.fixture
def make_vault(tmp_path):
    """make_vault({"Folder/Note.md": "text", ...}) -> a vault folder with those notes."""

    def make(notes: dict[str, str | bytes], name: str = "vault") -> Path:
        root = tmp_path / name
        root.mkdir(exist_ok=True)
        for rel, body in notes.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(body, bytes):
                path.write_bytes(body)
            else:
                path.write_text(body, encoding="utf-8")
        return root

    return make


@pytest.fixture
def sample_vault_copy(tmp_path) -> Path:
    dest = tmp_path / "sample_vault"
    shutil.copytree(SAMPLE_VAULT, dest)
    return dest


@pytest.fixture(scope="session")
def embedder():
    from vault_agent.config import IndexSettings
    from vault_agent.index.embedder import Embedder

    return Embedder(IndexSettings())


@pytest.fixture
def open_index(embedder):
    """open_index(vault, **settings) -> an Indexer sharing the session's embedding model."""
    from vault_agent.config import load_settings
    from vault_agent.index.indexer import Indexer
    from vault_agent.paths import app_dirs

    opened = []

    def make(vault: Path, **overrides):
        settings = load_settings(vault=vault, **overrides)
        ix = Indexer(settings, vault.resolve(), app_dirs().ensure(), embedder=embedder)
        opened.append(ix)
        return ix

    yield make
    for ix in opened:
        ix.close()
