"""index.embedding_backend (issue 22): the int8 ONNX embedder is exported once from the bundled
weights into the data dir, gives vectors close to PyTorch's, is reused on the next start, and
switching backend re-embeds into another collection instead of mixing vectors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from vault_agent.config import IndexSettings
from vault_agent.errors import UserError
from vault_agent.index import onnx_int8
from vault_agent.index.embedder import Embedder


def test_each_backend_has_its_own_vector_identity_and_torch_keeps_the_old_one():
    torch_id = Embedder(IndexSettings(embedding_backend="torch")).identity
    int8 = Embedder(IndexSettings(embedding_backend="onnx-int8"))
    assert torch_id == "bundled:all-MiniLM-L6-v2"  # a torch index made by any version stays valid under torch
    assert int8.identity != torch_id and "onnx-int8" in int8.label
    assert int8._model is None  # nothing exported or loaded until the first embedding


def finished_export(model_dir, out):
    (out / onnx_int8.MODEL_FILE).write_bytes(b"int8 model")  # what the identity needs: an export that finished


def test_auto_is_int8_for_the_bundled_model_on_the_cpu_and_torch_on_a_gpu_or_for_your_own_model(monkeypatch, tmp_path):
    from vault_agent.index import embedder as embedder_module

    monkeypatch.setattr(embedder_module, "_cuda_available", lambda: False)
    monkeypatch.setattr(onnx_int8, "export_in_child", finished_export)
    auto = Embedder(IndexSettings(), cache_dir=tmp_path / "embedders")
    assert auto.backend == "onnx-int8" and "(onnx-int8)" in auto.label
    # the same vectors as choosing onnx-int8 by name: setting it explicitly keeps the index
    assert auto.identity == Embedder(IndexSettings(embedding_backend="onnx-int8")).identity
    own = tmp_path / "my-embedder"
    own.mkdir()
    assert Embedder(IndexSettings(embedding_model=str(own))).backend == "torch"
    assert Embedder(IndexSettings(device="cuda")).backend == "torch"
    assert Embedder(IndexSettings(device="mps")).backend == "torch"

    monkeypatch.setattr(embedder_module, "_cuda_available", lambda: True)
    assert Embedder(IndexSettings()).backend == "torch"  # device auto with a GPU: PyTorch on it
    assert Embedder(IndexSettings(device="cpu")).backend == "onnx-int8"


def test_auto_keeps_torch_and_its_index_when_the_int8_export_fails(monkeypatch, tmp_path, caplog):
    from vault_agent.index import embedder as embedder_module

    def broken(model_dir, out):
        raise onnx_int8.ExportFailed("MemoryError: no room")

    monkeypatch.setattr(embedder_module, "_cuda_available", lambda: False)
    monkeypatch.setattr(onnx_int8, "export_in_child", broken)
    auto = Embedder(IndexSettings(), cache_dir=tmp_path / "embedders")
    with caplog.at_level(logging.WARNING):
        identity = auto.identity
    # the identity torch always had: an index made with torch is kept, not dropped for an empty one
    assert identity == "bundled:all-MiniLM-L6-v2" and auto.backend == "torch" and "onnx" not in auto.label
    assert any("embedding with PyTorch" in r.getMessage() and "no room" in r.getMessage() for r in caplog.records)
    explicit = Embedder(IndexSettings(embedding_backend="onnx-int8"), cache_dir=tmp_path / "embedders")
    with pytest.raises(UserError, match="no room"):  # chosen by name, a failed export stops with the fix
        explicit.embed(["a note"])


def test_weights_go_7_bit_only_on_x86_without_vnni_where_8_bit_products_can_saturate():
    assert onnx_int8.seven_bit_weights("x86_64", "flags : fpu avx2 fma") is True
    assert onnx_int8.seven_bit_weights("x86_64", "flags : fpu avx2 avx512f avx512_vnni") is False
    assert onnx_int8.seven_bit_weights("x86_64", "flags : fpu avx2 avx_vnni") is False
    assert onnx_int8.seven_bit_weights("aarch64", "") is False
    assert onnx_int8.seven_bit_weights("AMD64", "") is True  # Windows says AMD64; its flags unknown here


def test_the_early_layers_down_projections_stay_float_and_the_later_ones_go_int8():
    from types import SimpleNamespace

    def node(name, op="MatMul"):
        return SimpleNamespace(name=name, op_type=op)

    names = [f"/model/encoder/layer.{i}/{part}/MatMul" for i in range(6)
             for part in ("attention/output/dense", "intermediate/dense", "output/dense")]
    graph = SimpleNamespace(graph=SimpleNamespace(node=[node(n) for n in names] + [node("Attention_0", "Attention")]))
    kept = onnx_int8.float_down_projections(graph, layers=6)
    assert kept == [f"/model/encoder/layer.{i}/output/dense/MatMul" for i in range(3)]
    # a down-projection whose layer cannot be told stays float: slower, never less accurate
    odd = SimpleNamespace(graph=SimpleNamespace(node=[node("/encoder/block/output/dense/MatMul")]))
    assert onnx_int8.float_down_projections(odd, layers=6) == ["/encoder/block/output/dense/MatMul"]


def test_a_new_export_recipe_gets_its_own_vector_collection(monkeypatch):
    before = Embedder(IndexSettings(embedding_backend="onnx-int8")).identity
    monkeypatch.setattr("vault_agent.index.embedder.RECIPE", "v999")
    assert Embedder(IndexSettings(embedding_backend="onnx-int8")).identity != before


def test_a_failed_export_is_one_line_naming_the_fix_and_leaves_no_partial_model(tmp_path, monkeypatch):
    def broken(model_dir, out):
        (out / "model-f32.onnx").write_bytes(b"half")
        raise RuntimeError("exporter exploded\nwith a long traceback-ish second line")

    monkeypatch.setattr(onnx_int8, "export_in_child", broken)
    embedder = Embedder(IndexSettings(embedding_backend="onnx-int8"), cache_dir=tmp_path / "embedders")
    with pytest.raises(UserError) as e:
        embedder.embed(["a note"])
    message = str(e.value)
    assert "\n" not in message and "exporter exploded" in message
    assert 'index.embedding_backend = "torch"' in message
    assert list((tmp_path / "embedders").iterdir()) == []  # the temporary folder is gone, no cache entry


@pytest.mark.slow
def test_a_failing_export_child_is_one_line_from_the_child_and_leaves_no_model(tmp_path):
    with pytest.raises(UserError) as e:  # the real child process, given a model folder that is not there
        onnx_int8.cached_model("path:/nowhere", str(tmp_path / "no-such-model"), tmp_path / "embedders")
    message = str(e.value)
    assert "\n" not in message and message.startswith("cannot export the int8 ONNX embedder (")
    assert "Traceback" not in message and 'index.embedding_backend = "torch"' in message
    assert "no-such-model" in message  # the child's own account of what went wrong
    assert list((tmp_path / "embedders").iterdir()) == []


def test_the_int8_backend_refuses_cuda_with_the_setting_to_change(tmp_path):
    embedder = Embedder(IndexSettings(embedding_backend="onnx-int8", device="cuda"), cache_dir=tmp_path)
    with pytest.raises(UserError, match='index.device = "cpu"'):
        embedder.embed(["a note"])


@pytest.fixture(scope="module")
def int8_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("embedders")


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture(scope="module")
def int8_embedder(int8_cache):
    embedder = Embedder(IndexSettings(embedding_backend="onnx-int8"), cache_dir=int8_cache)
    root, seen = logging.getLogger(), _Records()
    level = root.level
    root.setLevel(logging.INFO)  # as the daemon logs
    root.addHandler(seen)
    try:
        embedder.embed(["load"])  # the export happens here, once for the module
    finally:
        root.removeHandler(seen)
        root.setLevel(level)
    embedder.export_log = seen.records
    return embedder


@pytest.mark.slow
def test_the_export_leaves_one_line_in_the_log_not_onnxruntimes_notes(int8_embedder):
    lines = [r.getMessage() for r in int8_embedder.export_log]
    assert any("exporting the int8 ONNX embedder" in line for line in lines)
    noise = [line for r, line in zip(int8_embedder.export_log, lines) if "onnxruntime" in r.pathname]
    assert noise == [], noise[:3]


@pytest.mark.slow
def test_int8_vectors_are_close_to_torch_on_the_sample_vault(int8_embedder, torch_embedder, open_index,
                                                             sample_vault_copy):
    import numpy as np

    ix = open_index(sample_vault_copy)
    ix.reconcile()
    texts = [row[0] for row in ix.catalog.db.execute("SELECT text FROM chunks")]
    assert len(texts) > 50
    a = np.array(torch_embedder.embed(texts))
    b = np.array(int8_embedder.embed(texts))
    cosines = (a * b).sum(axis=1)  # both unit length
    # measured with the smoothed recipe (v4): mean 0.998, worst 0.995 (v3, unsmoothed: 0.996 / 0.992)
    assert cosines.mean() > 0.997, f"mean chunk cosine {cosines.mean():.4f}"
    assert cosines.min() > 0.99, f"worst chunk cosine {cosines.min():.4f}"
    query_a = np.array(torch_embedder.embed_query("How often do I water the tomatoes?"))
    query_b = np.array(int8_embedder.embed_query("How often do I water the tomatoes?"))
    assert float(query_a @ query_b) > 0.98
    alone = np.array(int8_embedder.embed(texts[:3]))  # int8 activations are scaled per batch: close, not equal
    assert ((b[:3] * alone).sum(axis=1) > 0.99).all()  # measured ~0.995


@pytest.mark.slow
def test_the_cached_export_is_reused_on_the_next_start(int8_embedder, int8_cache, monkeypatch):
    [folder] = [p for p in int8_cache.iterdir()]
    stamp = (folder / onnx_int8.MODEL_FILE).stat().st_mtime_ns

    def no_second_export(*_):
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_int8, "export_in_child", no_second_export)  # where a second export would start
    again = Embedder(IndexSettings(embedding_backend="onnx-int8"), cache_dir=int8_cache)
    assert again.embed(["a second start"])  # loads from the cache
    assert (folder / onnx_int8.MODEL_FILE).stat().st_mtime_ns == stamp
    assert [p.name for p in int8_cache.iterdir()] == [folder.name]


@pytest.mark.slow
def test_switching_backend_re_embeds_into_another_collection(int8_embedder, torch_embedder, sample_vault_copy,
                                                             agent_home):
    from vault_agent.config import load_settings
    from vault_agent.index.indexer import Indexer
    from vault_agent.paths import app_dirs

    vault = sample_vault_copy.resolve()

    def index_with(embedder, backend):
        settings = load_settings(vault=vault, index={"embedding_backend": backend})
        ix = Indexer(settings, vault, app_dirs().ensure(), embedder=embedder)
        try:
            before = embedder.embedded_count
            ix.reconcile()
            return ix.vectors.name, ix.vectors.count(), embedder.embedded_count - before
        finally:
            ix.close()

    torch_name, torch_count, _ = index_with(torch_embedder, "torch")
    int8_name, int8_count, embedded = index_with(int8_embedder, "onnx-int8")
    assert int8_name != torch_name
    assert int8_count == torch_count and embedded == int8_count  # every chunk embedded again, by int8
    back_name, _, embedded_back = index_with(torch_embedder, "torch")
    assert back_name == torch_name and embedded_back == torch_count  # and back: no int8 vector is reused


@pytest.mark.slow
def test_a_query_embeds_on_one_torch_thread_quietly_and_matches_the_indexed_vector(torch_embedder, capfd, monkeypatch):
    """A question's embedding takes the one-thread path (not stalled by an indexing batch on the
    other threads) and writes no progress bar into the daemon's log. sentence-transformers 5 gave
    every model an `encode_query` that once shadowed that path."""
    import numpy as np
    import torch

    counts = []
    real_set = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (counts.append(n), real_set(n)))
    text = "How often do I water the tomatoes?"
    capfd.readouterr()
    query = torch_embedder.embed_query(text)
    err = capfd.readouterr().err
    assert counts and counts[0] == 1  # switched to one thread for the query, then back
    assert "Batches" not in err
    assert isinstance(query, list) and all(isinstance(x, float) for x in query)
    assert np.allclose(query, torch_embedder.embed([text])[0], atol=1e-5)
