"""The int8 ONNX embedder: the same sentence-transformers model, exported once to ONNX with its
pooling inside the graph, fused by onnxruntime's BERT optimizer and dynamically quantized to int8.

Why: on 2 CPU cores MiniLM embeds faster in int8 under onnxruntime than in float32 under
PyTorch (benchmarks/index_bench.py), with vectors within cosine ~0.998 of the original's (mean over the benchmark vaults' chunks).
The export runs locally from the weights already on disk (nothing is downloaded) and is cached in
the data dir, keyed by the model's identity and the exporting library versions.

Choices that matter for quality and speed (measured on the sample vault):
- eager attention for the export: the fused `Attention` op needs it (the SDPA graph is not fused,
  and ran slower than PyTorch);
- only MatMuls with constant weights are quantized, per output channel: quantizing the
  attention score MatMuls too dropped the worst chunk's cosine to 0.87, per-tensor weights to 0.92;
- the inputs of the LayerNorm-fed MatMuls (QKV, FFN up) are smoothed first (smoothing.py);
- the early layers' FFN down-projections stay float32 (float_down_projections);
- activations are quantized per batch, so a vector depends slightly on its batch-mates (padding
  included): cosine ~0.995 between batchings, not bit-identical as in float32.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from ..errors import UserError
from .smoothing import calibration_feeds, smooth_layernorm_inputs

log = logging.getLogger(__name__)

MODEL_FILE = "model-int8.onnx"
# the export recipe: part of the vectors' identity (embedder.py), so a new recipe re-embeds the vault
# instead of mixing its vectors with the old recipe's in one collection
RECIPE = "v4"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
FIX = 'set index.embedding_backend = "torch" to embed with PyTorch instead'


def cache_key(identity: str) -> str:
    """The export depends on the model and on the libraries that made it: a new torch or
    onnxruntime makes a new export rather than trusting an old one. (Versions from the installed
    packages' metadata: importing torch to ask costs ~2 s on every start.)"""
    from importlib.metadata import version

    libraries = f"torch {version('torch')}|ort {version('onnxruntime')}"
    weights = "7-bit" if seven_bit_weights() else "8-bit"  # an export moved to another CPU is redone
    return hashlib.sha1(f"{identity}|{libraries}|{RECIPE}|{weights}".encode()).hexdigest()[:16]


def seven_bit_weights(machine: str | None = None, cpuinfo: str | None = None) -> bool:
    """Whether to quantize weights to 7 bits (onnxruntime's reduce_range): on x86 without VNNI,
    onnxruntime multiplies uint8 activations by int8 weights with VPMADDUBSW, whose pairwise int16
    sums saturate (255 * 127 * 2 > 32767; onnxruntime's quantization docs), and smoothing spreads
    the activations over more of the uint8 range. 7-bit weights cannot saturate. Measured on a VNNI
    CPU, where both are exact: mean chunk cosine to torch 0.9973 against 0.9981 for 8 bits."""
    import platform

    if (machine or platform.machine()).lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return False  # ARM's int8 dot products widen to 32 bits
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return True  # not Linux: VNNI cannot be told from here, so the safe choice
    return not {"avx512_vnni", "avx_vnni"} & set(cpuinfo.split())


def cached_model(identity: str, model_dir: str, cache_root: Path) -> Path:
    """The int8 model's folder for this model, exported on the first call (atomically: a folder
    written beside the cache and renamed into place, so a crash leaves no half-written model)."""
    final = cache_root / cache_key(identity)
    if (final / MODEL_FILE).exists():
        return final
    cache_root.mkdir(parents=True, exist_ok=True)
    _remove_stale_exports(cache_root)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=cache_root))
    try:
        log.info("exporting the int8 ONNX embedder for %s to %s (once)", identity, final)
        export_in_child(model_dir, tmp)
        (tmp / "source.json").write_text(json.dumps({"identity": identity, "model_dir": model_dir}))
        try:
            os.replace(tmp, final)
        except OSError:
            if not (final / MODEL_FILE).exists():  # not another process winning the race
                raise
    except UserError:
        raise
    except Exception as e:
        detail = str(e) if isinstance(e, ExportFailed) else f"{type(e).__name__}: {_first_line(e)}"
        raise UserError(f"cannot export the int8 ONNX embedder ({detail}); {FIX}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


class ExportFailed(Exception):
    """The export's child process failed; the message is its own one-line account."""


USER_ERROR = "user error: "  # how the child marks a message meant for the user as it is
EXPORT_TIMEOUT_S = 1800  # MiniLM takes ~7 s on 2 cores; a user's larger model, minutes


def export_in_child(model_dir: str, out: Path) -> None:
    """export_int8 in a child process. In the daemon's own process the export's memory stayed after
    it ended (torch.onnx, onnxruntime's optimizer, the float model held twice): RSS 1.4 GB for the
    daemon's lifetime, against 0.39 GB when it loads the cached export. The child runs in `out`
    with this package first on its path: `python -m` puts the working directory on sys.path, and the
    daemon's may be a vault holding a `torch.py` of its own."""
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
    try:
        proc = subprocess.run([sys.executable, "-m", __name__, model_dir, str(out)], cwd=out, env=env,
                              capture_output=True, text=True, timeout=EXPORT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ExportFailed(f"took more than {EXPORT_TIMEOUT_S} s") from None
    if proc.returncode < 0:  # the kernel's OOM killer, or someone's kill
        raise ExportFailed(f"the export process was killed by signal {-proc.returncode} (out of memory?)")
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        last = lines[-1] if lines else f"exit code {proc.returncode}"
        if last.startswith(USER_ERROR):
            raise UserError(last[len(USER_ERROR):])
        raise ExportFailed(last)


def _remove_stale_exports(cache_root: Path, older_than_s: float = 3600) -> None:
    """Folders of exports that never finished (a daemon killed mid-export: ~90 MB each)."""
    for folder in cache_root.glob(".export-*"):
        try:
            if time.time() - folder.stat().st_mtime > older_than_s:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else "no message"


def export_int8(model_dir: str, out: Path) -> None:
    """ONNX float32 export -> BERT fusion -> smoothing -> dynamic int8 quantization; leaves MODEL_FILE in out."""
    import torch
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(model_dir, device="cpu", model_kwargs={"attn_implementation": "eager"})
    pooling = st[1] if len(st) > 1 else None
    mode = getattr(pooling, "pooling_mode", None)
    if mode is None and getattr(pooling, "pooling_mode_mean_tokens", False):
        mode = "mean"  # older sentence-transformers name the mode by flags
    if mode != "mean":
        raise UserError(f"the int8 ONNX embedder supports mean-pooled models only; {FIX}")
    transformer = st[0].auto_model.eval()
    config = transformer.config

    class Pooled(torch.nn.Module):
        """The transformer plus mean pooling and L2 normalisation: one vector per text out."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask,
                                token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2, dim=1)

    sample = st.tokenizer(["an example", "a somewhat longer example text"], padding=True, return_tensors="pt")
    f32 = out / "model-f32.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes about shapes: the axes are declared dynamic below
        torch.onnx.export(
            Pooled(transformer), tuple(sample[k] for k in INPUTS), str(f32),
            input_names=list(INPUTS), output_names=["embedding"],
            dynamic_axes={**{k: {0: "batch", 1: "seq"} for k in INPUTS}, "embedding": {0: "batch"}},
            opset_version=17, dynamo=False,
        )
    fused = out / "model-fused.onnx"
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    import onnx

    # onnxruntime's optimizer and quantizer log each fusion and tensor (~50 lines): they go to the
    # export child's stderr, which export_in_child reads only for a failure's last line
    optimized = optimize_model(str(f32), model_type="bert", num_heads=int(config.num_attention_heads),
                               hidden_size=int(config.hidden_size), opt_level=1, use_gpu=False)
    graph = optimized.model
    smooth_layernorm_inputs(graph, calibration_feeds(st.tokenizer, int(st.max_seq_length), INPUTS))
    onnx.save(graph, str(fused))
    keep_float = float_down_projections(graph, int(config.num_hidden_layers))
    quantize_dynamic(str(fused), str(out / MODEL_FILE), weight_type=QuantType.QInt8, per_channel=True,
                     nodes_to_exclude=keep_float, reduce_range=seven_bit_weights(),
                     extra_options={"DefaultTensorType": 1, "MatMulConstBOnly": True})  # 1: FLOAT
    f32.unlink()
    fused.unlink()
    st.tokenizer.save_pretrained(str(out / "tokenizer"))
    (out / "settings.json").write_text(json.dumps({"max_seq_length": int(st.max_seq_length),
                                                   "dimension": int(config.hidden_size)}))


def float_down_projections(graph_model, layers: int) -> list[str]:
    """The FFN down-projections of the first half of the layers: these stay float32. Their input (the
    GELU output) has outliers that a per-tensor uint8 activation scale flattens, and the early layers'
    errors grow through the rest (MiniLM, mean chunk cosine to torch when only layer k's is quantized:
    layer 0 0.9948, 1 0.9958, 2 0.9955, 3-5 0.9962-0.9964, all kept float 0.9964). Quantizing the later
    half makes embedding 1.1-1.25x faster for a mean cosine of 0.9960; all six cost 0.9928 and a
    sample-vault hit@1 question (see the README's figures). Per-channel smoothing of their input
    (SmoothQuant, alpha 0.25-0.75, calibrated on the eval vault) was worse than none at every alpha."""
    def layer_of(name: str) -> int | None:
        for part in name.split("/"):
            if part.startswith("layer.") and part[6:].isdigit():
                return int(part[6:])
        return None

    return [n.name for n in graph_model.graph.node
            if n.op_type == "MatMul" and n.name.endswith("/output/dense/MatMul") and "/attention/" not in n.name
            and (layer_of(n.name) is None or layer_of(n.name) < (layers + 1) // 2)]


class _Device:
    type = "cpu"


class OnnxInt8Model:
    """The slice of SentenceTransformer's interface the Embedder uses, on onnxruntime: `encode`,
    `tokenizer`, `max_seq_length`, `device`, `get_embedding_dimension`, plus `encode_one_query` and
    `threads`. Two sessions: one with a thread team for batches, one single-threaded for queries
    (a query's ops are too small to split, and a team would stall beside a running batch)."""

    device = _Device()

    def __init__(self, folder: Path, threads: int):
        import onnxruntime as ort
        from transformers import AutoTokenizer

        settings = json.loads((folder / "settings.json").read_text())
        self.max_seq_length = int(settings["max_seq_length"])
        self.dimension = int(settings["dimension"])
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
        self.threads = max(1, threads)
        self._batch = self._session(ort, folder, self.threads)
        self._query = self._session(ort, folder, 1)

    @staticmethod
    def _session(ort, folder: Path, threads: int):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # no spinning between ops: a spinning team collapses when another job takes a core
        # (the answer being generated, other processes), like llama.cpp's OpenMP threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(folder / MODEL_FILE), options, providers=["CPUExecutionProvider"])

    def get_embedding_dimension(self) -> int:
        return self.dimension

    def _run(self, session, texts: list[str]):
        import numpy as np

        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_seq_length, return_tensors="np")
        feed = {k: enc[k].astype(np.int64) if k in enc else np.zeros_like(enc["input_ids"], dtype=np.int64)
                for k in INPUTS}
        return session.run(None, feed)[0]

    def encode(self, texts: list[str], batch_size: int = 64, **_ignored):
        """Unit-length vectors (the graph normalises), as a numpy array."""
        import numpy as np

        parts = [self._run(self._batch, texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, self.dimension), dtype=np.float32)

    def encode_one_query(self, text: str) -> list[float]:
        return self._run(self._query, [text])[0].tolist()


if __name__ == "__main__":  # the child process of export_in_child: MODEL_DIR OUT
    try:
        export_int8(sys.argv[1], Path(sys.argv[2]))
    except UserError as e:
        print(f"{USER_ERROR}{_first_line(e)}", file=sys.stderr)
        raise SystemExit(1) from None
    except (Exception, KeyboardInterrupt) as e:
        print(f"{type(e).__name__}: {_first_line(e)}", file=sys.stderr)
        raise SystemExit(1) from None
