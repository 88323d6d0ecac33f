"""Every opset from 7 to the newest the runtime loads, and every IR version from 3, through
the verbs: the versions are read from the installed onnx and onnxruntime, not written here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import onnxferry
from onnxferry.runtime import runtime_limits


def _pairs() -> list[tuple[int, int]]:
    """(IR version, opset): each opset 7..max with the lowest IR that carries it, and each IR
    3..max with the highest opset it carries, all within what onnxruntime loads."""
    max_ir, max_opset = runtime_limits()
    pairs = set()
    for opset in range(7, min(max_opset, onnx.defs.onnx_opset_version()) + 1):
        pairs.add((max(3, helper.find_min_ir_version_for([helper.make_opsetid("", opset)])), opset))
    for ir in range(3, min(max_ir, onnx.IR_VERSION) + 1):
        opsets = [row[2] for row in helper.VERSION_TABLE if row[1] == ir]
        if opsets:
            pairs.add((ir, min(max(opsets), max_opset)))
    return sorted(pairs)


def _model(ir: int, opset: int) -> onnx.ModelProto:
    """x[batch, 4] -> Mul by a weight (listed as an input below IR 4) -> Relu -> y."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    w = helper.make_tensor("w", TensorProto.FLOAT, [4], [0.5, -1.0, 2.0, 3.0])
    nodes = [helper.make_node("Mul", ["x", "w"], ["m"]), helper.make_node("Relu", ["m"], ["y"])]
    inputs = [x]
    if ir < 4:
        inputs.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [4]))
    graph = helper.make_graph(nodes, "g", inputs, [y], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir)


@pytest.mark.parametrize(("ir", "opset"), _pairs(), ids=lambda v: str(v))
def test_every_version_goes_through_the_verbs(tmp_path: Path, ir: int, opset: int) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(_model(ir, opset).SerializeToString())
    model = onnxferry.Model.load(path)
    assert model.summary()["ir_version"] == ir
    assert onnxferry.check(path).ok
    assert onnxferry.compare(model, model).ok
    x = np.arange(8, dtype=np.float32).reshape(2, 4) - 3
    np.savez(tmp_path / "golden.npz", x=x, y=np.maximum(x * [0.5, -1.0, 2.0, 3.0], 0))
    assert onnxferry.test(model, tmp_path / "golden.npz").ok
    (result,) = onnxferry.bench([model], warmup=0, iterations=2).result.results
    assert result.iterations == 2
