"""Models of ONNX's first opsets (1-6: the model zoo's 2017-2018 files, Caffe2 and PyTorch
0.x exports): onnx's reference implementation runs them with the operator versions it lacks
(``convert.legacy_ops``), so ``convert`` raises them to an opset ONNX Runtime loads and
verifies the result; each legacy operator against numpy, and whole models against numpy
written from the operators' specification, not against the reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from onnxferry.convert import convert
from onnxferry.convert.legacy_ops import legacy_ops
from onnxferry.runtime import OrtRunner
from tests.helpers import save

RNG = np.random.default_rng(0)


def _model(
    nodes: list[onnx.NodeProto],
    inputs: dict[str, list[int]],
    outputs: dict[str, list[int]],
    weights: dict[str, np.ndarray],
    opset: int,
) -> onnx.ModelProto:
    """An IR 3 model (its weights listed as inputs too, as IR 3 wants) at ai.onnx ``opset``."""
    declared = {**inputs, **{k: list(v.shape) for k, v in weights.items()}}
    graph = helper.make_graph(
        nodes,
        "legacy",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in declared.items()],
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in outputs.items()],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=3)


def _reference(proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    opset = proto.opset_import[0].version
    ops = {n.op_type for n in proto.graph.node}
    return list(ReferenceEvaluator(proto, new_ops=legacy_ops(opset, ops)).run(None, feeds))


def _one(node: onnx.NodeProto, x: np.ndarray, opset: int, **weights: np.ndarray) -> np.ndarray:
    outputs: dict[str, list[int]] = {name: [] for name in node.output}
    proto = _model([node], {"x": list(x.shape)}, outputs, weights, opset)
    del proto.graph.output[:]  # shapes are what is tested
    proto.graph.output.extend(onnx.ValueInfoProto(name=n) for n in node.output)
    return _reference(proto, {"x": x})[0]


def test_each_legacy_operator_computes_what_its_specification_says() -> None:
    x = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
    dropout = helper.make_node("Dropout", ["x"], ["y", "mask"], is_test=1, ratio=0.3)
    np.testing.assert_array_equal(_one(dropout, x, 6), x)
    np.testing.assert_array_equal(_one(dropout, x, 1), x)
    reshape = helper.make_node("Reshape", ["x"], ["y"], shape=[0, -1], consumed_inputs=[0])
    assert _one(reshape, x, 1).shape == (2, 60)
    split = helper.make_node("Split", ["x"], ["y", "z"], axis=3, split=[2, 3])
    assert _one(split, x, 1).shape == (2, 3, 4, 2)
    equal = helper.make_node("Split", ["x"], ["y", "z"], axis=2)
    assert _one(equal, x, 1).shape == (2, 3, 2, 5)
    clip = helper.make_node("Clip", ["x"], ["y"], min=-0.5, max=0.25, consumed_inputs=[0])
    np.testing.assert_array_equal(_one(clip, x, 1), np.clip(x, -0.5, 0.25))
    s, b, m, v = (RNG.uniform(0.5, 2, 3).astype(np.float32) for _ in range(4))
    bn = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], is_test=1,
                          epsilon=1e-3, consumed_inputs=[0, 0, 0, 1, 1])  # fmt: skip
    want = (x - m[:, None, None]) / np.sqrt(v[:, None, None] + 1e-3) * s[:, None, None]
    got = _one(bn, x, 1, s=s, b=b, m=m, v=v)
    np.testing.assert_allclose(got, want + b[:, None, None], rtol=1e-5)
    bias = RNG.standard_normal(3).astype(np.float32)
    add = helper.make_node("Add", ["x", "bias"], ["y"], broadcast=1, axis=1)
    np.testing.assert_allclose(_one(add, x, 6, bias=bias), x + bias[:, None, None], rtol=1e-6)
    tail = RNG.standard_normal(5).astype(np.float32)
    mul = helper.make_node("Mul", ["x", "tail"], ["y"], broadcast=1)  # from the end
    np.testing.assert_allclose(_one(mul, x, 1, tail=tail), x * tail, rtol=1e-6)
    softmax = helper.make_node("Softmax", ["x"], ["y"])  # opsets 1-12: flattened from axis 1
    flat = np.exp(x.reshape(2, -1))
    want = (flat / flat.sum(axis=1, keepdims=True)).reshape(x.shape)
    np.testing.assert_allclose(_one(softmax, x, 11), want, rtol=1e-5)
    assert legacy_ops(17, {"Softmax", "Add"}) == []


def _caffe2_cnn(opset: int) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A SqueezeNet-like block as Caffe2 and PyTorch 0.x wrote them: a bias added with the
    old broadcast from axis 1, an inference Dropout with its mask, BatchNormalization with
    consumed_inputs, Softmax without an axis over [N, C, 1, 1]."""
    w = {
        "w1": RNG.standard_normal((4, 3, 3, 3)), "b1": RNG.standard_normal(4),
        "s": RNG.uniform(0.5, 2, 4), "z": RNG.standard_normal(4), "v": RNG.uniform(0.5, 2, 4),
        "w2": RNG.standard_normal((5, 4, 1, 1)), "b2": RNG.standard_normal(5),
    }  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], kernel_shape=[3, 3], strides=[2, 2]),
        helper.make_node("Add", ["c1", "b1"], ["a1"], broadcast=1, axis=1),
        helper.make_node("BatchNormalization", ["a1", "s", "z", "z", "v"], ["bn"], is_test=1),
        helper.make_node("Relu", ["bn"], ["r"]),
        helper.make_node("Dropout", ["r"], ["d", "mask"], is_test=1, ratio=0.5),
        helper.make_node("Conv", ["d", "w2"], ["c2"], kernel_shape=[1, 1]),
        helper.make_node("Add", ["c2", "b2"], ["a2"], broadcast=1, axis=1),
        helper.make_node("GlobalAveragePool", ["a2"], ["gap"]),
        helper.make_node("Softmax", ["gap"], ["prob"]),
    ]  # fmt: skip
    if opset < 6:  # the first versions name the inputs they update in place
        nodes[2].attribute.append(helper.make_attribute("consumed_inputs", [0, 0, 0, 1, 1]))
    return _model(nodes, {"x": [1, 3, 9, 9]}, {"prob": [1, 5, 1, 1]}, w, opset), w


def _caffe2_cnn_numpy(x: np.ndarray, w: dict[str, np.ndarray]) -> np.ndarray:
    """The same block in numpy, from the operators' specification."""

    def conv(x: np.ndarray, k: np.ndarray, stride: int) -> np.ndarray:
        n, _, h, wd = x.shape
        kh = k.shape[2]
        out = np.zeros((n, k.shape[0], (h - kh) // stride + 1, (wd - kh) // stride + 1))
        for i in range(out.shape[2]):
            for j in range(out.shape[3]):
                patch = x[:, :, i * stride : i * stride + kh, j * stride : j * stride + kh]
                out[:, :, i, j] = np.einsum("nchw,ochw->no", patch, k)
        return out

    per_channel = (slice(None), None, None)
    a1 = conv(x, w["w1"], 2) + w["b1"][per_channel]
    bn = (a1 - w["z"][per_channel]) / np.sqrt(w["v"][per_channel] + 1e-5)
    r = np.maximum(bn * w["s"][per_channel] + w["z"][per_channel], 0)
    gap = (conv(r, w["w2"], 1) + w["b2"][per_channel]).mean(axis=(2, 3))
    e = np.exp(gap - gap.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True)).reshape(1, 5, 1, 1)


@pytest.mark.parametrize("opset", [1, 3, 6])
def test_a_caffe2_era_model_converts_verified_and_computes_its_specification(
    opset: int, tmp_path: Path
) -> None:
    """Before: onnx's reference had no Dropout before 7 (nor BatchNormalization-1), so the
    original could not be run and convert refused; and onnx's version converter unsqueezed
    a bias added from axis 1 by one axis too many (B[5] to [5, 1, 1, 1]: an output of
    [5, 5, 1, 1]), which the parity check then refused."""
    proto, weights = _caffe2_cnn(opset)
    model = convert(save(proto, tmp_path / "old.onnx"), tmp_path / "new.onnx")
    report = model.provenance[-1]
    assert report.ok and report.result.details["reference"].endswith("@onnx.reference")
    assert model.opset_imports["ai.onnx"] >= 7
    x = RNG.standard_normal((1, 3, 9, 9)).astype(np.float32)
    (prob,) = OrtRunner(model).run({"x": x}).values()
    np.testing.assert_allclose(prob, _caffe2_cnn_numpy(x, weights), rtol=1e-4, atol=1e-6)
