"""Shared fixtures: an isolated VAULT_AGENT_HOME per test, temp vaults, a tiny deterministic embedder
for the index and daemon tests (`embedder`), the real embedding model for the tests about it
(`real_embedder`, slow), and `wait_until` for tests that wait on another thread or process.

The fast tier (`pytest -m "not slow"`) never loads a real model: a test that is not marked slow and
constructs the real embedding model (sentence-transformers) or the chat model (llama.cpp) fails."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Callable

import pytest

import real_model_guard

REPO = Path(__file__).resolve().parent.parent
SAMPLE_VAULT = REPO / "sample_vault"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def wait_until(condition: Callable[[], object], timeout: float = 15.0, interval: float = 0.02,
               what: str = "the condition") -> object:
    """Poll condition until it returns something truthy (returned) or fail after timeout seconds:
    a deadline instead of a sleep that guesses how long the other side takes."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def pytest_configure(config):
    config.addinivalue_line("markers", "real_embedder: open_index embeds with the real embedding model "
                                       "instead of the hashing one (mark the test slow too)")


def served_url(proc, home: Path, timeout: float = 180.0) -> str:
    """The URL a `vault-agent serve --port 0` subprocess bound (from the daemon.json it writes once it
    listens, under VAULT_AGENT_HOME=home): no free port picked beforehand that another process could
    take in between."""
    import json

    daemon_file = home / "state" / "daemon.json"

    def announced():
        assert proc.poll() is None, f"serve exited with {proc.returncode}"
        try:
            info = json.loads(daemon_file.read_text())
        except (OSError, ValueError):
            return None
        return info["url"] if info.get("pid") == proc.pid else None

    return wait_until(announced, timeout=timeout, interval=0.1, what="the daemon to listen")


# --- the fast tier loads no real model (tests/real_model_guard.py) ----------------------------------

real_model_guard.install()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    real_model_guard.CURRENT_TEST["item"] = item
    yield
    real_model_guard.CURRENT_TEST["item"] = None


@pytest.fixture(autouse=True)
def no_real_model_in_the_fast_tier(request):
    """Fails a test not marked slow that loaded a real model (even in a thread it started)."""
    yield
    loads = real_model_guard.LOADS.pop(request.node.nodeid, None)
    if loads:
        pytest.fail(f"not marked slow, yet loaded: {', '.join(sorted(set(loads)))}")


@pytest.fixture(autouse=True)
def agent_home(tmp_path, tmp_path_factory, monkeypatch) -> Path:
    for key in list(os.environ):
        if key.startswith("VAULT_AGENT_"):
            monkeypatch.delenv(key)
    home = tmp_path / "agent-home"
    monkeypatch.setenv("VAULT_AGENT_HOME", str(home))
    # the bundled model's Q8_0 copy (llm/merged_copy.py), built once for the session, not per home
    shared = tmp_path_factory.getbasetemp() / "served-models"
    shared.mkdir(exist_ok=True)
    (home / "cache").mkdir(parents=True)
    (home / "cache" / "served-models").symlink_to(shared, target_is_directory=True)
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
    """The tiny deterministic embedder (tests/hashing_embedder.py): for tests not about the model."""
    from hashing_embedder import HashingEmbedder

    return HashingEmbedder()


@pytest.fixture(scope="session")
def real_embedder():
    """The bundled embedding model on the default backend (`auto`: int8 ONNX on this CPU machine, its
    export made once per session), loaded once: for tests about retrieval quality or the model
    itself (mark them slow)."""
    from vault_agent.config import IndexSettings
    from vault_agent.index.embedder import Embedder

    return Embedder(IndexSettings())


@pytest.fixture(scope="session")
def torch_embedder():
    """The bundled model on PyTorch: the reference the int8 backend is measured against."""
    from vault_agent.config import IndexSettings
    from vault_agent.index.embedder import Embedder

    return Embedder(IndexSettings(embedding_backend="torch"))


@pytest.fixture
def index_embedder(request):
    """What open_index embeds with: the real model for a test marked real_embedder (and slow)."""
    real = request.node.get_closest_marker("real_embedder") is not None
    return request.getfixturevalue("real_embedder" if real else "embedder")


@pytest.fixture
def open_index(index_embedder):
    """open_index(vault, **settings) -> an Indexer sharing the session's embedder."""
    from vault_agent.config import load_settings
    from vault_agent.index.indexer import Indexer
    from vault_agent.paths import app_dirs

    opened = []

    def make(vault: Path, **overrides):
        settings = load_settings(vault=vault, **overrides)
        ix = Indexer(settings, vault.resolve(), app_dirs().ensure(), embedder=index_embedder)
        opened.append(ix)
        return ix

    yield make
    for ix in opened:
        ix.close()


class RunningDaemon:
    """A real daemon (uvicorn on a free loopback port) serving a temp copy of a vault."""

    def __init__(self, daemon, thread):
        import httpx

        self.daemon = daemon
        self.thread = thread
        self.url = daemon.url
        self.token = daemon.token
        self.vault = daemon.vault
        self.runtime = daemon.runtime
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=120)

    def stop(self):
        self.http.close()
        self.daemon.stop()
        self.thread.join(timeout=60)


def start_daemon(vault: Path, home: Path, embedder, backend=None, **overrides) -> RunningDaemon:
    import threading

    from vault_agent.config import load_settings
    from vault_agent.daemon import Daemon
    from vault_agent.paths import app_dirs

    os.environ["VAULT_AGENT_HOME"] = str(home)
    settings = load_settings(vault=vault, **overrides)
    daemon = Daemon(settings, vault.resolve(), app_dirs(), embedder=embedder, backend=backend).build()
    ready = threading.Event()
    thread = threading.Thread(target=daemon.serve, kwargs={"ready": ready}, daemon=True)
    thread.start()
    assert ready.wait(60), "daemon did not start"
    running = RunningDaemon(daemon, thread)
    wait_until(lambda: running.runtime.indexer.catalog.get_meta("last_sync") is not None, timeout=120,
               what="the start-up index")
    return running


@pytest.fixture
def built_daemon(make_vault, agent_home):
    """A daemon built (its Runtime and app) but not serving, with the FakeBackend: for tests of the
    wiring that need no HTTP server, no index pass and no model."""
    from vault_agent.config import load_settings
    from vault_agent.daemon import Daemon
    from vault_agent.llm.fake import FakeBackend
    from vault_agent.paths import app_dirs

    vault = make_vault({"Note.md": "# Note\n\ntext\n"}, name="built-vault").resolve()
    daemon = Daemon(load_settings(vault=vault), vault, app_dirs(), backend=FakeBackend()).build()
    yield daemon
    daemon.close()


# Short answers keep the real model fast enough for a test suite on 2 cores.
FAST_LLM = {"max_tokens": 40, "context_chunks": 3, "n_ctx": 2048}


@pytest.fixture(scope="session")
def llm_backend():
    from vault_agent.config import LLMSettings
    from vault_agent.llm.backend import LlamaBackend

    backend = LlamaBackend(LLMSettings(**FAST_LLM))
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, real_embedder, llm_backend):
    """One real daemon per test module (real embeddings, real chat model) on a fresh copy of the sample vault."""
    root = tmp_path_factory.mktemp("daemon")
    vault = root / "vault"
    shutil.copytree(SAMPLE_VAULT, vault)
    saved = os.environ.get("VAULT_AGENT_HOME")
    running = start_daemon(vault, root / "home", real_embedder, llm_backend, llm=FAST_LLM,
                           server={"port": 0, "queue_size": 2}, index={"debounce_seconds": 0.2})
    yield running
    running.stop()
    if saved is not None:
        os.environ["VAULT_AGENT_HOME"] = saved


@pytest.fixture(scope="session")
def fake_daemon(tmp_path_factory, embedder):
    """A real daemon (uvicorn, index, chromadb, preference log) on a copy of the sample vault, with the
    deterministic FakeBackend in place of llama.cpp and the hashing embedder in place of the embedding
    model: for the API guards, feedback and the TUI, where real models add minutes and nothing to
    check. `.backend` is the fake."""
    yield from serve_fake_daemon(tmp_path_factory, embedder)


def serve_fake_daemon(tmp_path_factory, embedder):
    """The body of the fake_daemon fixture (a module may want one of its own: see test_tui.py)."""
    from vault_agent.llm.fake import FakeBackend

    root = tmp_path_factory.mktemp("fake-daemon")
    vault = root / "vault"
    shutil.copytree(SAMPLE_VAULT, vault)
    saved = os.environ.get("VAULT_AGENT_HOME")
    backend = FakeBackend()
    running = start_daemon(vault, root / "home", embedder, backend,
                           server={"port": 0, "queue_size": 2}, index={"debounce_seconds": 0.2})
    running.backend = backend
    yield running
    running.stop()
    backend.close()
    if saved is not None:
        os.environ["VAULT_AGENT_HOME"] = saved


@pytest.fixture
def api(fake_daemon):
    """The module's fake-backed daemon with the fake's knobs back at their defaults."""
    backend = fake_daemon.backend
    def reset():
        backend.fail_next, backend.token_delay_s, backend.max_tokens = None, 0.0, 24
        backend.one_answer = backend.parallel = False
        backend.before_generation = None

    reset()
    yield fake_daemon
    reset()


def record_response(log, question: str = "How often do I water tomatoes?", answer: str = "Every day.",
                    source: str = "ask") -> str:
    """A response in the preference log, as /ask would record it (no model needed)."""
    msgs = [{"role": "system", "content": "rules"}, {"role": "user", "content": question}]
    return log.record_response(question=question, prompt=question, messages=msgs, answer=answer, retrieved=[],
                               citations=[], model_id="test", adapter_version=None, timings={}, source=source)


@pytest.fixture(scope="session")
def bundled_tokenizer():
    """The bundled chat model's tokenizer (with its chat template), read from the GGUF itself."""
    from transformers import AutoTokenizer

    from vault_agent.llm.backend import resolve_model_path

    gguf = resolve_model_path("bundled")
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


@pytest.fixture
def tiny_llama(bundled_tokenizer):
    """A fresh tiny random llama (2 layers, 64 wide; seeded) with the bundled model's vocabulary:
    trains in seconds on CPU, so DPO plumbing can be tested for real. Shared with the training tests."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(bundled_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=bundled_tokenizer.bos_token_id, eos_token_id=bundled_tokenizer.eos_token_id,
        pad_token_id=bundled_tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config), bundled_tokenizer


# --- GGUF LoRA export and the eval gate ------------------------------------------------------------

@pytest.fixture(scope="session")
def bundled_gguf():
    from vault_agent.llm.backend import resolve_model_path

    return resolve_model_path("bundled")


@pytest.fixture(scope="session")
def hf_base(bundled_gguf):
    """The bundled GGUF as a float32 transformers model (what training starts from)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(bundled_gguf.parent), gguf_file=bundled_gguf.name,
                                                 dtype=torch.float32)
    return model.eval()


def strong_adapter(hf_base, out_dir, targets, seed=0, scale=0.02):
    """A LoRA adapter with random A and B (PEFT starts B at zero) that shifts log-probs by far
    more than the quantization noise between the two engines."""
    import torch
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(hf_base, LoraConfig(r=8, lora_alpha=16, target_modules=targets, lora_dropout=0.0))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
    model.save_pretrained(str(out_dir))
    return model
