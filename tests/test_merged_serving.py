"""The model served from a Q8_0 copy, the active adapter merged in (llm/merged_copy.py, issue 22): on
the bundled model `auto` serves its Q8_0 copy (no adapter) or merges, the copy predicts what the
runtime LoRA predicts, no LoRA runs per token, turning the adapter off gives back the base exactly, a
one-answer override (A/B comparisons) still works, and a copy that cannot be built falls back to the
runtime LoRA (or the model file itself)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from random_lora import random_lora

from vault_agent.config import LLMSettings
from vault_agent.llm import merged_copy
from vault_agent.llm.backend import LlamaBackend

QUESTION = [{"role": "user", "content": "Name three colours."}]
TEXT = "The starter is fed flour and water in equal weights every morning, then left on the counter."


def log_probs(backend: LlamaBackend) -> np.ndarray:
    """Next-token log-probs at every position of TEXT under what the backend serves now."""
    from vault_agent.llm.lora import BatchDecoder

    with backend.generation_lock:
        llm = backend.llm
        decoder = BatchDecoder(llm)
        try:
            decoder.clear()
            scores = decoder.decode(llm.tokenize(TEXT.encode(), add_bos=True), 0, outputs_from=0).astype(np.float64)
            decoder.clear()  # the next generation starts from an empty cache
        finally:
            decoder.close()
    scores -= scores.max(-1, keepdims=True)
    return scores - np.log(np.exp(scores).sum(-1, keepdims=True))


def kl(p: np.ndarray, q: np.ndarray) -> float:
    return float((np.exp(p) * (p - q)).sum(-1).mean())


def test_auto_merges_small_cpu_models_only():
    assert merged_copy.merge_wanted("auto", 135_000_000, 0)
    assert not merged_copy.merge_wanted("auto", 135_000_000, -1)  # on a GPU the runtime LoRA costs little
    assert not merged_copy.merge_wanted("auto", 1_100_000_000, 0)  # ~1B: runtime LoRA 0.90x, Q8_0 copy 0.86x
    assert merged_copy.merge_wanted("merged", 8_000_000_000, 0)
    assert not merged_copy.merge_wanted("runtime", 135_000_000, 0)


def test_whether_a_model_is_copied_is_read_from_its_header_and_odd_files_are_served_as_they_are(tmp_path):
    from tiny_gguf import write_gguf

    small = write_gguf(tmp_path / "small.gguf", rows=32)
    assert merged_copy.model_parameters(small) == 32 * 16 + 16  # no model load, the tensor shapes
    assert merged_copy.served_copies("auto", small, 0)
    assert not merged_copy.served_copies("auto", small, -1)
    # a split model's part (a merge reads one file) and a file that is no GGUF are never copied
    part = write_gguf(tmp_path / "big-00001-of-00002.gguf", split=(0, 2))
    assert not merged_copy.served_copies("merged", part, 0)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model at all, just some bytes")
    assert not merged_copy.served_copies("merged", junk, 0)
    assert not merged_copy.served_copies("merged", tmp_path / "missing.gguf", 0)


def test_only_the_two_models_used_last_keep_their_own_copy(tmp_path, monkeypatch):
    """Each model's Q8_0 copy is a whole model: switching through several models must not leave one
    copy per model ever served in the cache (a rebuild takes seconds)."""
    import os

    from vault_agent.llm import merge

    def fake_merge(base, lora, out, **_):
        Path(out).write_bytes(b"copy of " + Path(base).name.encode())

    monkeypatch.setattr(merge, "merge_lora", fake_merge)
    models = []
    for name in ("a", "b", "c"):
        models.append(tmp_path / f"{name}.gguf")
        models[-1].write_bytes(name.encode())
    root = tmp_path / "served-models"
    copies = []
    for i, model in enumerate(models[:2]):
        copies.append(merged_copy.ensure_base_copy(model, root))
        os.utime(copies[-1], ns=(i * 10**9, i * 10**9))  # a used before b
    merged_copy.ensure_base_copy(models[0], root)  # a used again: now b is the older one
    merged_copy.ensure_base_copy(models[2], root)  # a third model: b's copy goes
    assert sorted(p.name for p in root.iterdir()) == sorted(
        merged_copy.base_copy_path(m, root).name for m in (models[0], models[2]))


@pytest.mark.slow
def test_the_bundled_model_serves_its_adapter_from_a_merged_copy_that_predicts_like_the_lora(tmp_path, caplog):
    merged = LlamaBackend(LLMSettings(max_tokens=24, n_ctx=512))
    runtime = LlamaBackend(LLMSettings(max_tokens=24, n_ctx=512, adapter_serving="runtime"))
    try:
        (tmp_path / "v0001").mkdir()
        adapter = random_lora(merged.model_path, tmp_path / "v0001" / "adapter.gguf",
                              ("attn_q", "attn_v", "ffn_down"), rank=8, scale=0.05)
        base_answer, base_lp = merged.chat(QUESTION, temperature=0), log_probs(merged)

        ms = merged.set_adapter(adapter, "v0001")
        runtime.set_adapter(adapter, "v0001")
        assert merged.adapter_served_as == "merged" and runtime.adapter_served_as == "runtime"
        copy = merged.weights_path
        assert copy.parent == adapter.parent and copy.is_file()  # kept with the version, goes with it
        assert merged._loras.current is None  # nothing applied per token
        assert ms < 2000  # the copy was built before the swap: answers waited for a load only

        adapted_lp, lora_lp = log_probs(merged), log_probs(runtime)
        moved = kl(lora_lp, base_lp)
        assert moved > 0.05  # the adapter changes the model clearly
        assert kl(lora_lp, adapted_lp) < 0.1 * moved  # and the copy does what it does
        adapted_answer = merged.chat(QUESTION, temperature=0)
        assert adapted_answer != base_answer

        # one answer with another adapter (here none: an A/B comparison against the base), then back
        override = "".join(merged.stream_chat(QUESTION, temperature=0, adapter=(None, None)))
        assert override == base_answer
        assert merged.adapter_version == "v0001" and merged.weights_path == copy
        assert merged.chat(QUESTION, temperature=0) == adapted_answer

        # activating it again reuses the copy; turning it off gives the base back exactly
        built = copy.stat().st_mtime_ns
        merged.set_adapter(adapter, "v0001")
        assert copy.stat().st_mtime_ns == built
        merged.set_adapter(None, None)
        assert merged.adapter_served_as is None and merged.weights_path == merged.base_weights
        assert merged.chat(QUESTION, temperature=0) == base_answer

        # a copy that cannot be built: the adapter is still served, at run time, and the log says why
        def broken(*args, **kwargs):
            raise OSError("No space left on device")

        original, merged_copy.ensure_merged = merged_copy.ensure_merged, broken
        try:
            with caplog.at_level(logging.WARNING, logger="vault_agent.llm.merged_copy"):
                merged.set_adapter(adapter, "v0001")
        finally:
            merged_copy.ensure_merged = original
        assert merged.adapter_served_as == "runtime" and merged.adapter_version == "v0001"
        assert "No space left on device" in caplog.text
        # the LoRA now runs on the Q8_0 copy of the model, `runtime` on its Q4_1 file: the same adapter
        assert kl(lora_lp, log_probs(merged)) < 0.1 * moved
    finally:
        merged.close()
        runtime.close()


@pytest.mark.slow
def test_the_bundled_model_itself_is_served_from_its_q8_0_copy_which_predicts_like_the_file(caplog, monkeypatch):
    copy = LlamaBackend(LLMSettings(max_tokens=24, n_ctx=512))
    as_is = LlamaBackend(LLMSettings(max_tokens=24, n_ctx=512, adapter_serving="runtime"))
    try:
        assert copy.base_weights == copy.weights_path == merged_copy.base_copy_path(copy.model_path)
        assert copy.base_weights.parent == merged_copy.base_copies_dir()  # in the data dir, built once
        assert copy.base_weights.stat().st_size > copy.model_path.stat().st_size  # Q8_0 weights
        assert as_is.weights_path == as_is.base_weights == as_is.model_path
        # Q8_0 holds the Q4_1 weights almost exactly: the same model, not a re-trained one
        assert kl(log_probs(as_is), log_probs(copy)) < 0.01
        assert copy.chat(QUESTION, temperature=0)
        assert copy.adapter_served_as is None and copy.model_id == as_is.model_id
    finally:
        copy.close()
        as_is.close()

    # a copy that cannot be built: the model file itself is served, and the log says why
    def full_disk(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(merged_copy, "ensure_base_copy", full_disk)
    with caplog.at_level(logging.WARNING, logger="vault_agent.llm.merged_copy"):
        fallback = LlamaBackend(LLMSettings(max_tokens=24, n_ctx=512))
    try:
        assert fallback.weights_path == fallback.base_weights == fallback.model_path
        assert "No space left on device" in caplog.text
        assert not fallback.copies  # and adapters are then applied at run time, not merged
    finally:
        fallback.close()


@pytest.mark.slow
def test_a_copy_llama_cpp_refuses_or_one_deleted_meanwhile_still_leaves_the_model_served(
        tmp_path, monkeypatch, caplog):
    import vault_agent.llm.backend as backend_module

    junk = tmp_path / "junk.q8_0.gguf"
    junk.write_bytes(b"GGUF" + b"\0" * 64)  # a "copy" llama.cpp cannot load
    monkeypatch.setattr(backend_module, "base_copy_or_model", lambda model, in_use=(): junk)
    with caplog.at_level(logging.WARNING, logger="vault_agent.llm.backend"):
        refused = LlamaBackend(LLMSettings(max_tokens=8, n_ctx=512))
    try:
        assert "cannot load junk.q8_0.gguf" in caplog.text
        assert refused.weights_path == refused.base_weights == refused.model_path and not refused.copies
        assert refused.chat(QUESTION, temperature=0)
    finally:
        refused.close()
    monkeypatch.undo()

    # the served copy deleted from the cache (which the README calls safe to delete): going back to
    # the base after an adapter rebuilds it instead of failing
    backend = LlamaBackend(LLMSettings(max_tokens=8, n_ctx=512))
    adapter = random_lora(backend.model_path, tmp_path / "adapter.gguf", ("attn_q",), rank=4, scale=0.05)
    try:
        backend.set_adapter(adapter, "v0001")
        assert backend.adapter_served_as == "merged"
        backend.base_weights.unlink()
        backend.set_adapter(None, None)
        assert backend.weights_path == backend.base_weights == merged_copy.base_copy_path(backend.model_path)
        assert backend.base_weights.is_file() and backend.chat(QUESTION, temperature=0)
    finally:
        backend.close()


def test_switching_versions_keeps_merged_copies_for_the_served_version_and_the_rollback_target_only(tmp_path):
    """Each merged copy is a whole model (138 MB on the bundled one): versions that are neither served
    nor the rollback target lose theirs (a later activation rebuilds it in seconds)."""
    from vault_agent.llm.fake import FakeBackend
    from vault_agent.paths import AppDirs
    from vault_agent.train import active, registry

    dirs = AppDirs(tmp_path / "c", tmp_path / "d", tmp_path / "s")
    root = registry.adapters_dir(dirs)
    for v in ("v0001", "v0002", "v0003"):
        (root / v).mkdir(parents=True)
        (root / v / "metrics.json").write_text("{}")
        (root / v / active.GGUF_NAME).write_bytes(b"gguf")
        (root / v / "adapter.merged-0123456789ab.gguf").write_bytes(b"copy")
    class Merging(FakeBackend):  # builds a copy on activation, as LlamaBackend does on a small model
        def set_adapter(self, path, version, scale=1.0):
            if path is not None:
                Path(path).with_name("adapter.merged-0123456789ab.gguf").write_bytes(b"copy")
            return super().set_adapter(path, version, scale)

    adapters = active.Adapters(dirs, Merging())
    adapters.activate("v0001")
    adapters.activate("v0002")
    assert sorted(p.parent.name for p in root.glob("*/*.merged-*.gguf")) == ["v0001", "v0002"]
    adapters.activate("v0003")
    assert sorted(p.parent.name for p in root.glob("*/*.merged-*.gguf")) == ["v0002", "v0003"]
    assert all((root / v / active.GGUF_NAME).is_file() for v in ("v0001", "v0002", "v0003"))  # adapters stay
