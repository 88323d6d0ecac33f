"""Tiny models written as ONNX text, shared by the tests.

    proto = onnx_text('''
        <ir_version: 10, opset_import: ["" : 21]>
        g (float[N, 4] x) => (float[N, 4] y) { y = Relu(x) }
    ''')
    path = save(proto, tmp_path / "m.onnx")
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper, parser


def onnx_text(text: str, *, check: bool = True) -> onnx.ModelProto:
    """Parse ONNX text format into a model (and run the checker unless told not to)."""
    proto = parser.parse_model(text)
    if check:
        onnx.checker.check_model(proto, full_check=True)
    return proto


def save(proto: onnx.ModelProto, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return path


RELU = """
<ir_version: 10, opset_import: ["" : 21]>
relu (float[batch, 4] x) => (float[batch, 4] y) { y = Relu(x) }
"""


def mlp(seed: int = 0, hidden: int = 8, classes: int = 3, noise: float = 0.0) -> onnx.ModelProto:
    """x[batch,4] -> MatMul+Add -> Relu -> MatMul+Add -> Softmax -> probs[batch,classes].

    ``noise`` perturbs the second layer's weights, for a model that differs slightly.
    Intermediate tensors are named h1, h2, logits so two variants share names.
    """
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((4, hidden)).astype(np.float32)
    b1 = rng.standard_normal(hidden).astype(np.float32)
    w2 = rng.standard_normal((hidden, classes)).astype(np.float32)
    w2 = (w2 + noise * np.abs(w2)).astype(np.float32)
    b2 = rng.standard_normal(classes).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"], name="fc1"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="fc1_bias"),
        helper.make_node("Relu", ["h1"], ["h2"], name="act"),
        helper.make_node("MatMul", ["h2", "w2"], ["l0"], name="fc2"),
        helper.make_node("Add", ["l0", "b2"], ["logits"], name="fc2_bias"),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("probs", onnx.TensorProto.FLOAT, ["batch", classes])],
        [
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(b1, "b1"),
            numpy_helper.from_array(w2, "w2"),
            numpy_helper.from_array(b2, "b2"),
        ],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    onnx.checker.check_model(proto, full_check=True)
    return proto
