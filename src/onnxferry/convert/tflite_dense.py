"""Sparse TFLite weights made dense, so tf2onnx can read them.

    sparse_tensors(Path("model.tflite"))            # ['model_1/.../Conv2D_dequantize', ...]
    densified(Path("model.tflite"), Path("dense.tflite"), interpreter)  # no DENSIFY op left

The TFLite converter can store a weight sparse (a block-sparse layout in the tensor's
``sparsity`` parameters) and expand it at run time with a DENSIFY op; MediaPipe's sparse face
and pose detectors keep dozens of fp16 weights so. tf2onnx reads every constant as a dense
buffer and fails on them. ``densified`` writes a copy whose DENSIFY outputs are the constants
LiteRT's own DENSIFY kernel computed (the interpreter run once with every tensor kept), read
and written with TensorFlow's own flatbuffer schema; conversion then verifies the ONNX model
against the original, sparse file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["densified", "sparse_tensors"]


def sparse_tensors(path: Path) -> list[str]:
    """Names of the tensors the flatbuffer stores sparse (TFLite's sparsity parameters)."""
    model = _read(path)
    return [
        _text(t.name) for graph in model.subgraphs or [] for t in graph.tensors or [] if t.sparsity
    ]


def densified(path: Path, out: Path, interpreter: Any) -> Path | None:
    """Write ``path`` with its main graph's DENSIFY ops replaced by their dense results to
    ``out``; None when there is nothing to densify there (or a DENSIFY sits in another graph,
    whose outputs one run cannot give). ``interpreter``: a LiteRT interpreter on ``path``
    that keeps every tensor (``experimental_preserve_all_tensors``)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = _read(path)
    densify = schema.BuiltinOperator.DENSIFY

    def is_densify(op: Any) -> bool:
        code = model.operatorCodes[op.opcodeIndex]
        return bool(max(code.builtinCode, code.deprecatedBuiltinCode) == densify)

    main, *others = model.subgraphs or [None]
    if main is None or any(is_densify(op) for g in others for op in g.operators or []):
        return None
    ops = main.operators or []
    if not any(is_densify(op) for op in ops):
        return None
    values = _densify_outputs(interpreter, [int(op.outputs[0]) for op in ops if is_densify(op)])
    for op in (op for op in ops if is_densify(op)):
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(values[int(op.outputs[0])].tobytes(), np.uint8)
        model.buffers.append(buffer)
        # tf2onnx reads every constant, used or not: the sparse input gets the dense bytes too
        for index in (int(op.outputs[0]), int(op.inputs[0])):
            main.tensors[index].buffer = len(model.buffers) - 1
            main.tensors[index].sparsity = None
    main.operators = [op for op in ops if not is_densify(op)]
    out.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
    return out


def _densify_outputs(runner: Any, indices: list[int]) -> dict[int, np.ndarray]:
    """What LiteRT's DENSIFY kernels give for ``indices``: one run on zeros, every tensor kept."""
    runner.allocate_tensors()
    for detail in runner.get_input_details():
        runner.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    runner.invoke()
    return {i: np.array(runner.get_tensor(i)) for i in indices}


def _read(path: Path) -> Any:
    from tensorflow.lite.python import schema_py_generated as schema

    return schema.ModelT.InitFromPackedBuf(bytearray(path.read_bytes()), 0)


def _text(name: Any) -> str:
    return name.decode(errors="replace") if isinstance(name, bytes) else str(name)
