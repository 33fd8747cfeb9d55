"""The int8 embedder's smoothing (index/smoothing.py), on a small LayerNorm -> MatMul graph with one
outlier channel, as MiniLM's LayerNorm outputs have: the float result is unchanged, and the int8
result is closer to it than without smoothing."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from vault_agent.index.smoothing import smooth_layernorm_inputs

HIDDEN, OUT = 64, 32


def layernorm_matmul_graph() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    gamma = np.ones(HIDDEN, dtype=np.float32)
    gamma[7] = 25.0  # one channel ~25x the others, as in a transformer's LayerNorm output
    nodes = [helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["normed"], name="ln", axis=-1),
             helper.make_node("MatMul", ["normed", "w"], ["y"], name="up")]
    inits = [numpy_helper.from_array(gamma, "gamma"), numpy_helper.from_array(np.zeros(HIDDEN, np.float32), "beta"),
             numpy_helper.from_array(rng.normal(0, 0.1, (HIDDEN, OUT)).astype(np.float32), "w")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", HIDDEN])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", OUT])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(model_or_path, x):
    source = model_or_path if isinstance(model_or_path, str) else model_or_path.SerializeToString()
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def int8_error(model: onnx.ModelProto, x, reference, tmp_path, name) -> float:
    onnx.save(model, str(tmp_path / f"{name}.onnx"))
    quantize_dynamic(str(tmp_path / f"{name}.onnx"), str(tmp_path / f"{name}-int8.onnx"),
                     weight_type=QuantType.QInt8, per_channel=True, extra_options={"MatMulConstBOnly": True})
    return float(np.abs(run(str(tmp_path / f"{name}-int8.onnx"), x) - reference).mean())


def test_smoothing_keeps_the_float_result_and_brings_int8_closer_to_it(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (4, 16, HIDDEN)).astype(np.float32)
    plain = layernorm_matmul_graph()
    reference = run(plain, x)

    smoothed = layernorm_matmul_graph()
    calibration = [({"x": rng.normal(0, 1, (2, 16, HIDDEN)).astype(np.float32)}, np.ones((2, 16), bool))]
    assert smooth_layernorm_inputs(smoothed, calibration) == 1
    np.testing.assert_allclose(run(smoothed, x), reference, rtol=1e-4, atol=1e-4)  # same function in float

    before = int8_error(plain, x, reference, tmp_path, "plain")
    after = int8_error(smoothed, x, reference, tmp_path, "smoothed")
    assert after < 0.6 * before, (before, after)


def test_a_matmul_not_fed_by_a_layernorm_is_left_alone():
    model = layernorm_matmul_graph()
    model.graph.node[1].input[0] = "x"  # the MatMul now reads the raw input: nothing to smooth
    model.graph.node.remove(model.graph.node[0])
    assert smooth_layernorm_inputs(model, []) == 0
    assert [n.op_type for n in model.graph.node] == ["MatMul"]


def test_a_channel_the_calibration_never_saw_is_not_amplified():
    model = layernorm_matmul_graph()
    gamma = next(i for i in model.graph.initializer if i.name == "gamma")
    values = numpy_helper.to_array(gamma).copy()
    values[3] = 0.0  # channel 3 is always 0 in the calibration batches
    gamma.CopyFrom(numpy_helper.from_array(values, "gamma"))
    x = np.random.default_rng(2).normal(0, 1, (2, 16, HIDDEN)).astype(np.float32)
    assert smooth_layernorm_inputs(model, [({"x": x}, np.ones((2, 16), bool))]) == 1
    inverse = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name.endswith("inverse_scale")))
    # its factor stays near the others' (a ~0 range once gave it 1000x: any later value an outlier)
    assert inverse[3] < 10 * np.median(inverse)
