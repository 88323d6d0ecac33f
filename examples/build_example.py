"""Build the bundled example: a tiny image classifier and its golden test data.

    python examples/build_example.py            # writes examples/tiny_classifier/

The model is Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> Softmax on
[batch, 3, 16, 16] images, with fixed random weights; model.py is the same model in PyTorch
(the source `make demo` converts). The expected outputs come from the
ONNX reference implementation (onnx.reference), not from ONNX Runtime, so `ferry test`
checks ONNX Runtime against an independent evaluator.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from tiny_classifier.model import CLASSES, weights

OUT = Path(__file__).parent / "tiny_classifier"


def build_model(seed: int = 7) -> onnx.ModelProto:
    conv_w, conv_b, fc_w, fc_b = weights(seed)
    nodes = [
        helper.make_node(
            "Conv", ["image", "conv_w", "conv_b"], ["conv"], name="conv", pads=[1] * 4
        ),
        helper.make_node("Relu", ["conv"], ["act"], name="relu"),
        helper.make_node("GlobalAveragePool", ["act"], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["features"], name="flatten"),
        helper.make_node("Gemm", ["features", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_classifier",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", CLASSES])],
        [
            numpy_helper.from_array(conv_w, "conv_w"),
            numpy_helper.from_array(conv_b, "conv_b"),
            numpy_helper.from_array(fc_w, "fc_w"),
            numpy_helper.from_array(fc_b, "fc_b"),
        ],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 21)],
        ir_version=10,
        producer_name="onnxferry-examples",
        producer_version="1",
    )
    helper.set_model_props(model, {"task": "image-classification", "classes": str(CLASSES)})
    onnx.checker.check_model(model, full_check=True)
    return model


def main() -> int:
    model = build_model()
    OUT.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(OUT / "model.onnx"))
    reference = ReferenceEvaluator(model)
    rng = np.random.default_rng(0)
    for index, batch in enumerate((1, 4)):
        image = rng.standard_normal((batch, 3, 16, 16)).astype(np.float32)
        (probabilities,) = reference.run(None, {"image": image})
        data_set = OUT / f"test_data_set_{index}"
        data_set.mkdir(exist_ok=True)
        onnx.save_tensor(numpy_helper.from_array(image, "image"), str(data_set / "input_0.pb"))
        onnx.save_tensor(
            numpy_helper.from_array(np.asarray(probabilities), "probabilities"),
            str(data_set / "output_0.pb"),
        )
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
