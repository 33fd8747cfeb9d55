"""LlamaBackend against the real bundled SmolLM2 GGUF: streaming, cancel, the lock, the
adapter slot (with a tiny real GGUF LoRA written here with the gguf package)."""

import threading

import numpy as np
import pytest

from vault_agent.config import LLMSettings
from vault_agent.errors import UserError
from vault_agent.llm.backend import LlamaBackend, resolve_model_path

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "Write a short poem about the sea."}]
STORY = [{"role": "user", "content": "Tell me a long story about a dragon and a knight."}]


@pytest.fixture(scope="module")
def backend():
    with LlamaBackend(LLMSettings(n_ctx=1024)) as b:
        yield b


@pytest.fixture
def no_adapter(backend):
    yield backend
    backend.set_adapter(None, None)


def greedy(backend, messages=QUESTION, n=24):
    return backend.chat(messages, max_tokens=n, temperature=0.0)


def test_bundled_model_loads(backend):
    assert backend.model_id.endswith(".gguf")
    assert backend.n_ctx == 1024
    assert backend.count_tokens("hello world") >= 2
    assert backend.adapter_version is None


def test_stream_matches_chat_with_same_seed(backend):
    pieces = list(backend.stream_chat(QUESTION, max_tokens=32, temperature=0.8, seed=7))
    assert len(pieces) > 1
    assert backend.chat(QUESTION, max_tokens=32, temperature=0.8, seed=7) == "".join(pieces)


def test_previous_request_does_not_leak_into_the_next(backend):
    first = backend.chat(QUESTION, max_tokens=24, temperature=0.8, seed=3)
    backend.chat(STORY, max_tokens=24, temperature=0.8, seed=5)
    assert backend.chat(QUESTION, max_tokens=24, temperature=0.8, seed=3) == first


def test_prompt_longer_than_the_context_is_a_user_error(backend):
    too_long = [{"role": "user", "content": "word " * 2000}]
    with pytest.raises(UserError, match="llm.n_ctx"):
        backend.chat(too_long, max_tokens=8)
    assert not backend.generation_lock.locked()
    assert greedy(backend, n=4)


def test_cancel_stops_between_tokens(backend):
    cancel = threading.Event()
    pieces = []
    for piece in backend.stream_chat(STORY, max_tokens=200, temperature=0.0, cancel=cancel):
        pieces.append(piece)
        if len(pieces) == 3:
            cancel.set()
    assert len(pieces) == 3
    assert not backend.generation_lock.locked()
    # An already-set event yields nothing at all.
    assert list(backend.stream_chat(STORY, max_tokens=200, cancel=cancel)) == []


def test_closing_the_stream_releases_the_lock(backend):
    gen = backend.stream_chat(STORY, max_tokens=200, temperature=0.0)
    next(gen)
    assert backend.generation_lock.locked()
    gen.close()  # what a client disconnect does
    assert not backend.generation_lock.locked()
    assert backend.generation_lock.acquire(timeout=0)
    backend.generation_lock.release()
    assert greedy(backend, n=8)


def test_adapter_swap_waits_for_the_running_generation(no_adapter):
    backend = no_adapter
    gen = backend.stream_chat(STORY, max_tokens=200, temperature=0.0)
    next(gen)
    swapper = threading.Thread(target=backend.set_adapter, args=(None, None))
    swapper.start()
    swapper.join(0.3)
    assert swapper.is_alive()  # blocked on generation_lock
    next(gen)  # generation carries on meanwhile
    gen.close()
    swapper.join(10)
    assert not swapper.is_alive()


def test_bad_model_path_is_a_one_line_user_error(tmp_path):
    with pytest.raises(UserError) as e:
        resolve_model_path(str(tmp_path / "missing.gguf"))
    msg = str(e.value)
    assert "\n" not in msg and "llm.model_path" in msg and "VAULT_AGENT_LLM__MODEL_PATH" in msg
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"not a model" * 100)
    with pytest.raises(UserError) as e:
        LlamaBackend(LLMSettings(model_path=str(garbage)))
    assert "\n" not in str(e.value) and "llm.model_path" in str(e.value)


def test_bundled_resolves_to_a_gguf():
    path = resolve_model_path("bundled")
    assert path.suffix == ".gguf" and path.is_file()


def test_broken_adapter_is_refused_and_generation_still_works(no_adapter, tmp_path):
    backend = no_adapter
    base = greedy(backend)
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"GGUF" + b"\x00" * 64)
    for bad in (garbage, tmp_path / "missing.gguf"):
        with pytest.raises(UserError) as e:
            backend.set_adapter(bad, "v0009")
        assert "\n" not in str(e.value) and str(bad) in str(e.value)
    assert backend.adapter_version is None
    assert greedy(backend) == base


def test_set_adapter_none_is_fine_without_adapter(no_adapter):
    ms = no_adapter.set_adapter(None, None)
    assert isinstance(ms, float) and ms >= 0
    assert no_adapter.adapter_version is None


# --- a real GGUF LoRA -------------------------------------------------------------------


def write_lora(path, backend, *, seed=0, rank=4, alpha=8.0, arch="llama", n_embd=None):
    """A random LoRA on every attn_output (out = n_embd, in = n_embd), strong enough to change
    greedy output. numpy shapes are reversed ggml ne: lora_a [rank, in], lora_b [out, rank]."""
    gguf = pytest.importorskip("gguf")
    meta = backend.llm.metadata
    n_embd = n_embd or int(meta["llama.embedding_length"])
    n_layer = int(meta["llama.block_count"])
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    for i in range(n_layer):
        name = f"blk.{i}.attn_output.weight"
        writer.add_tensor(f"{name}.lora_a", rng.normal(0, 0.5, (rank, n_embd)).astype(np.float32))
        writer.add_tensor(f"{name}.lora_b", rng.normal(0, 0.5, (n_embd, rank)).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_real_lora_changes_output_and_none_restores_it_exactly(no_adapter, tmp_path):
    backend = no_adapter
    base = greedy(backend)
    lora = write_lora(tmp_path / "a.gguf", backend)
    ms = backend.set_adapter(lora, "v0001")
    assert ms < 5000
    assert backend.adapter_version == "v0001" and backend.adapter_path == lora
    adapted = greedy(backend)
    assert adapted != base
    assert greedy(backend) == adapted  # deterministic with the adapter too

    # A second adapter replaces the first (the first is freed).
    other = write_lora(tmp_path / "b.gguf", backend, seed=1)
    backend.set_adapter(other, "v0002")
    assert greedy(backend) not in (base, adapted)

    # A failed load keeps the active adapter.
    backend.set_adapter(lora, "v0001")
    with pytest.raises(UserError, match="arch"):
        backend.set_adapter(write_lora(tmp_path / "wrong.gguf", backend, arch="gpt2"), "v0003")
    with pytest.raises(UserError, match="incorrect shape"):  # made for another base model
        backend.set_adapter(write_lora(tmp_path / "shape.gguf", backend, n_embd=64), "v0004")
    assert backend.adapter_version == "v0001"
    assert greedy(backend) == adapted

    backend.set_adapter(None, None)
    assert backend.adapter_version is None
    assert greedy(backend) == base


def test_close_is_idempotent_and_frees_an_active_adapter(tmp_path):
    b = LlamaBackend(LLMSettings(n_ctx=512))
    b.set_adapter(write_lora(tmp_path / "a.gguf", b), "v0001")
    b.close()
    b.close()
    with pytest.raises(RuntimeError):
        b.chat(QUESTION, max_tokens=4)


def test_models_that_take_adapters_load_without_extra_buffers_on_amx_cpus(monkeypatch):
    """On AMX CPUs llama.cpp put the weights in its AMX buffers and segfaulted once a LoRA adapter
    was active (llm/lora.py); the gate, the export tests and the hot-swap all died there."""
    import llama_cpp.llama_cpp as lib

    from vault_agent.llm import lora

    monkeypatch.setattr(lora, "cpu_has_amx", lambda: True)
    assert lib.llama_model_default_params().use_extra_bufts is True  # llama.cpp's default
    with lora.adapter_safe_loading():
        assert lib.llama_model_default_params().use_extra_bufts is False
    assert lib.llama_model_default_params().use_extra_bufts is True  # only while a model loads
    monkeypatch.setattr(lora, "cpu_has_amx", lambda: False)
    with lora.adapter_safe_loading():
        assert lib.llama_model_default_params().use_extra_bufts is True  # elsewhere repacking stays
