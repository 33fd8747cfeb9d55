"""SmoothQuant-style smoothing for the int8 embedder (Xiao et al., 2023): move the LayerNorm outputs'
outlier channels into the weights before dynamic quantization.

Why: onnxruntime quantizes a MatMul's input with one uint8 scale per tensor. A LayerNorm output has a
few channels ~15x larger than the rest (MiniLM: max ~28-30 against a median ~1.9), so that one
scale leaves the ordinary channels a handful of levels. The MatMuls fed by a LayerNorm (the fused
attention's QKV and the FFN up-projection) were the int8 model's largest error: keeping them float
raised the mean chunk cosine to torch from 0.9960 to 0.9973 (QKV) and 0.9979 (up) but ran 1.25x
slower. Dividing each input channel j by s_j and multiplying row j of the weight by s_j computes the
same product in float, with the input's range evened out; s_j = max|x_j|^a / max|W_j|^(1-a), a = 0.5.
Measured on both benchmark vaults (237 chunks): mean cosine 0.9960 -> 0.9980, worst chunk 0.9917 ->
0.9961, same speed (one elementwise Mul per smoothed op). Calibrating on either vault or on the short
texts below gives the same figures: the outlier channels are the model's, not the text's.
"""

from __future__ import annotations

import numpy as np

ALPHA = 0.5  # 0.35 / 0.5 / 0.7 measured 0.9976 / 0.9980 / 0.9979 mean cosine
# Varied texts, some shaped like notes (markdown, lists, dates, code), to find each channel's range.
CALIBRATION_TEXTS = (
    "# Vegetable Garden\n## Tomatoes > Watering\nWater deeply twice a week, about 2 litres per plant.",
    "Meeting notes 2026-03-03: agreed to move the billing database cutover to Saturday 06:00 UTC.",
    "- [ ] renew passport\n- [x] book dentist for 14 May\n- [ ] call Lena about the birthday dinner",
    "def retry(fn, attempts=3):\n    for i in range(attempts):\n        try:\n            return fn()\n        except OSError:\n            pass",
    "The quick brown fox jumps over the lazy dog.",
    "Consensus protocols elect a leader; a follower that hears no heartbeat within the election timeout starts a vote.",
    "Sourdough: feed the starter 1:5:5 (starter:flour:water) and wait until it doubles, about 6 hours at 24°C.",
    "Reading list: Designing Data-Intensive Applications (Kleppmann), The Overstory (Powers), Thinking, Fast and Slow.",
    "Heart rate zones from a max of 188 bpm: zone 2 is 125-140, tempo 155-165. Long run Sunday: 18 km easy.",
    "See [[Project Heron#Rollback]] and ![[Inbox#Quick Capture]] for the open questions. #work #postgres",
    "Error 409 CONFLICT: the lease is held by another worker; drop the result and fetch the next job.",
    "I slept badly again, woke at 4am thinking about the incident review. Must stop checking email in bed.",
    "| metric | before | after |\n|---|---|---|\n| p99 latency | 420 ms | 180 ms |\n| errors | 1.2% | 0.1% |",
    "Quarterly planning: hire two engineers, finish the migration, cut cloud spend by 15 percent.",
    "Photosynthesis converts light energy into chemical energy stored in glucose, releasing oxygen.",
    "export LARKSPUR_URL=https://localhost:7420 && larkspur queue pause emails --output json",
)


def smooth_layernorm_inputs(model, feeds: list[tuple[dict, np.ndarray]]) -> int:
    """Smooth, in place, every MatMul / fused Attention of the onnx `model` whose input is a LayerNorm's
    output and whose weight is a constant used by it alone; `feeds` are the calibration batches (the
    model's inputs, and a mask of the real, unpadded tokens). Returns how many ops were smoothed."""
    from onnx import helper, numpy_helper

    producers = {out: node for node in model.graph.node for out in node.output}
    initializers = {i.name: i for i in model.graph.initializer}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    targets = [n for n in model.graph.node
               if n.op_type in ("MatMul", "Attention") and len(n.input) > 1
               and n.input[1] in initializers and uses[n.input[1]] == 1
               and n.input[0] in producers and producers[n.input[0]].op_type.endswith("LayerNormalization")]
    if not targets:
        return 0
    ranges = _channel_ranges(model, sorted({n.input[0] for n in targets}), feeds)
    for number, node in enumerate(targets):
        weight = initializers[node.input[1]]
        w = numpy_helper.to_array(weight)  # (in_channels, out_channels)
        seen = ranges[node.input[0]]
        # a channel the calibration barely saw is taken as a tenth of a typical one, not as ~0: its
        # factor would multiply whatever it carries later and make it the new outlier
        seen = np.maximum(seen, 0.1 * max(float(np.median(seen)), float(seen.max()) * 1e-3, 1e-6))
        scale = (seen ** ALPHA / np.maximum(np.abs(w).max(axis=1), 1e-5) ** (1 - ALPHA)).astype(np.float32)
        weight.CopyFrom(numpy_helper.from_array((w * scale[:, None]).astype(np.float32), weight.name))
        name = f"smooth_{number}_{node.name}"  # unique even for ops the exporter left unnamed
        model.graph.initializer.append(numpy_helper.from_array(1.0 / scale, f"{name}/inverse_scale"))
        mul = helper.make_node("Mul", [node.input[0], f"{name}/inverse_scale"], [f"{name}/output"], name=f"{name}/Mul")
        model.graph.node.insert(list(model.graph.node).index(node), mul)  # keeps the graph in topological order
        node.input[0] = f"{name}/output"
    return len(targets)


def calibration_feeds(tokenizer, max_length: int, inputs: tuple[str, ...]) -> list[tuple[dict, np.ndarray]]:
    """CALIBRATION_TEXTS as the model's input batches, each with its mask of real tokens."""
    feeds = []
    for start in range(0, len(CALIBRATION_TEXTS), 8):
        enc = tokenizer(list(CALIBRATION_TEXTS[start : start + 8]), padding=True, truncation=True,
                        max_length=max_length, return_tensors="np")
        feed = {k: enc[k].astype(np.int64) if k in enc else np.zeros_like(enc["input_ids"], dtype=np.int64)
                for k in inputs}
        feeds.append((feed, enc["attention_mask"].astype(bool)))
    return feeds


def _channel_ranges(model, names: list[str], feeds: list[tuple[dict, np.ndarray]]) -> dict:
    """max |x_j| of each named tensor over the calibration batches' real tokens."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in names:
        probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    ranges: dict = {}
    for feed, real in feeds:
        for name, values in zip(names, session.run(names, feed)):
            top = np.abs(values[real]).max(axis=0)
            ranges[name] = np.maximum(ranges[name], top) if name in ranges else top
    return ranges
