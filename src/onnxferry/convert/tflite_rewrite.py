"""TFLite flatbuffer rewrites that let tf2onnx read a model it otherwise refuses.

    sparse_tensors(Path("model.tflite"))            # ['model_1/.../Conv2D_dequantize', ...]
    for_tf2onnx(Path("model.tflite"), Path("fixed.tflite"), interpreter)  # or None: nothing to do

Each rewrite keeps what the model computes; conversion then verifies the ONNX model against
the original file, so a rewrite that changed a value would fail there. Read and written with
TensorFlow's own flatbuffer schema (``schema_py_generated``, ``flatbuffer_utils``).

- Sparse weights: the TFLite converter can store a weight sparse (a block-sparse layout in
  the tensor's ``sparsity`` parameters) and expand it at run time with a DENSIFY op;
  MediaPipe's sparse face and pose detectors keep dozens of fp16 weights so. tf2onnx reads
  every constant as a dense buffer and fails on them. The DENSIFY outputs become constants
  holding what LiteRT's own DENSIFY kernel computed (the interpreter run once with every
  tensor kept).
- The real part of a real FFT: TensorFlow's STFT becomes RFFT2D in TFLite, and BirdNET takes
  its spectrogram's real part with a complex-to-float CAST after a SQUEEZE. tf2onnx converts
  RFFT2D only into a ComplexAbs. An RFFT2D over one row (``fft_length [1, N]``) whose every
  use is a chain of SQUEEZE / RESHAPE ending in such a CAST or a REAL becomes a BATCH_MATMUL
  with the DFT's cosine matrix (``Re X[k] = sum_n x[n] cos(2 pi k n / N)``), the chain float
  and each REAL a float CAST. A magnitude behind such a line (``tf.abs`` of an STFT: RFFT2D,
  SQUEEZE, COMPLEX_ABS) moves to right after the FFT, the pair tf2onnx converts.
- MediaPipe's ``Convolution2DTransposeBias`` custom op (its selfie segmenters), which LiteRT
  runs and tf2onnx does not know: the builtin TRANSPOSE_CONV with the custom options' padding
  and strides, then an ADD of the bias, where the output's shape is static.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "for_tf2onnx",
    "model_bytes",
    "operator_name",
    "read_model",
    "sparse_tensors",
    "tensor_name",
]

FLOAT32, INT32, COMPLEX64 = 0, 2, 8
"""TFLite's TensorType codes."""


def sparse_tensors(path: Path) -> list[str]:
    """Names of the tensors the flatbuffer stores sparse (TFLite's sparsity parameters)."""
    model = read_model(path)
    return [
        tensor_name(t.name)
        for graph in model.subgraphs or []
        for t in graph.tensors or []
        if t.sparsity
    ]


def for_tf2onnx(path: Path, out: Path, interpreter: Callable[[], Any]) -> Path | None:
    """Write ``path`` with every rewrite that applies to ``out``; None when none does.
    ``interpreter()``: a LiteRT interpreter on ``path`` that keeps every tensor
    (``experimental_preserve_all_tensors``), made only when sparse weights need it."""

    model = read_model(path)
    changed = _densify(model, interpreter)
    changed = _real_fft(model) or changed
    changed = _transpose_conv_bias(model) or changed
    if not changed:
        return None
    out.write_bytes(model_bytes(model))
    return out


# --- sparse weights -----------------------------------------------------------------------


def _densify(model: Any, interpreter: Callable[[], Any]) -> bool:
    """The main graph's DENSIFY ops replaced by their results (none when a DENSIFY sits in
    another graph, whose outputs one run cannot give)."""
    main, *others = model.subgraphs or [None]
    if main is None or any(
        operator_name(model, op) == "DENSIFY" for g in others for op in g.operators
    ):
        return False
    ops = [op for op in main.operators or [] if operator_name(model, op) == "DENSIFY"]
    if not ops:
        return False
    runner = interpreter()
    runner.allocate_tensors()
    for detail in runner.get_input_details():
        runner.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    runner.invoke()
    for op in ops:
        value = np.array(runner.get_tensor(int(op.outputs[0])))
        buffer = _add_buffer(model, value)
        # tf2onnx reads every constant, used or not: the sparse input gets the dense bytes too
        for index in (int(op.outputs[0]), int(op.inputs[0])):
            main.tensors[index].buffer = buffer
            main.tensors[index].sparsity = None
    main.operators = [op for op in main.operators if op not in ops]
    return True


# --- the real part of a real FFT ----------------------------------------------------------

_SHAPE_ONLY = ("SQUEEZE", "RESHAPE")


def _real_fft(model: Any) -> bool:
    """Each RFFT2D tf2onnx cannot take as it stands, rewritten where one of the two ways fits."""
    changed = False
    for graph in model.subgraphs or []:
        for op in list(graph.operators or []):  # _abs_first moves an op within the list
            if operator_name(model, op) == "RFFT2D":
                changed = (
                    _rfft_as_matmul(model, graph, op) or _abs_first(model, graph, op) or changed
                )
    return changed


def _abs_first(model: Any, graph: Any, op: Any) -> bool:
    """An RFFT2D whose one use is a line of SQUEEZE / RESHAPE ops ending in a COMPLEX_ABS:
    the magnitude moved to right after the FFT (shapes commute with it), the pair tf2onnx
    converts. Each tensor on the line takes the shape of the one before it, now float."""
    index = int(op.outputs[0])
    line: list[int] = [index]
    ops: list[Any] = []
    while True:
        users = [o for o in graph.operators if index in [int(i) for i in o.inputs]]
        if len(users) != 1 or index in [int(i) for i in graph.outputs]:
            return False
        (user,) = users
        code = operator_name(model, user)
        if code == "COMPLEX_ABS" and ops:
            break
        if code not in _SHAPE_ONLY or int(user.inputs[0]) != index:
            return False
        ops.append(user)
        index = int(user.outputs[0])
        line.append(index)
    magnitude = user
    shapes = [(graph.tensors[i].shape, graph.tensors[i].shapeSignature) for i in line]
    ends = [int(magnitude.outputs[0])]
    # FFT -> |.| -> line[1]; each shape op then reads line[k] and writes line[k + 1], the last
    # one the magnitude's old output, so every reader of it is unchanged
    magnitude.inputs = np.array([line[0]], np.int32)
    magnitude.outputs = np.array([line[1]], np.int32)
    for k, shape_op in enumerate(ops):
        inputs = [int(i) for i in shape_op.inputs]
        inputs[0] = line[k + 1]
        shape_op.inputs = np.array(inputs, np.int32)
        shape_op.outputs = np.array([(line[2:] + ends)[k]], np.int32)
    for k, index in enumerate(line[1:]):
        tensor = graph.tensors[index]
        tensor.type = FLOAT32
        tensor.shape, tensor.shapeSignature = shapes[k]
    graph.operators.remove(magnitude)
    graph.operators.insert(graph.operators.index(ops[0]), magnitude)
    return True


def _rfft_as_matmul(model: Any, graph: Any, op: Any) -> bool:
    """One RFFT2D over one row, used only for its real part, as x @ cos; False if not so."""
    from tensorflow.lite.python import schema_py_generated as schema

    signal, length = (graph.tensors[int(i)] for i in op.inputs)
    data = model.buffers[length.buffer].data if length.buffer else None
    if data is None or signal.shape is None or len(signal.shape) < 2:
        return False
    fft = np.frombuffer(bytes(data), np.int32).tolist()
    if len(fft) != 2 or fft[0] != 1 or list(signal.shape[-2:]) != fft:
        return False
    found = _real_part_chain(model, graph, int(op.outputs[0]))
    if found is None:
        return False
    chain, casts = found
    n = fft[1]
    angles = 2 * np.pi * (np.outer(np.arange(n), np.arange(n // 2 + 1)) % n) / n  # exact turns
    graph.tensors.append(_constant_tensor(model, np.cos(angles).astype(np.float32), f"cos_{n}"))
    op.inputs = np.array([int(op.inputs[0]), len(graph.tensors) - 1], np.int32)
    op.opcodeIndex = _opcode(model, schema.BuiltinOperator.BATCH_MATMUL)
    op.builtinOptionsType = schema.BuiltinOptions.BatchMatMulOptions
    op.builtinOptions = schema.BatchMatMulOptionsT()
    for index in chain:
        graph.tensors[index].type = FLOAT32
    for cast in casts:  # each now a float-to-float CAST: tf2onnx has no REAL
        cast.opcodeIndex = _opcode(model, schema.BuiltinOperator.CAST)
        if cast.builtinOptions is not None and hasattr(cast.builtinOptions, "inDataType"):
            cast.builtinOptions.inDataType = FLOAT32
        else:
            cast.builtinOptionsType, cast.builtinOptions = schema.BuiltinOptions.NONE, None
    return True


def _real_part_chain(model: Any, graph: Any, start: int) -> tuple[list[int], list[Any]] | None:
    """The tensors from ``start`` through SQUEEZE / RESHAPE ops, and the REAL ops and
    complex-to-float CASTs that end every path; None when any use is something else (or a
    graph output)."""
    chain, casts, frontier = [start], [], [start]
    outputs = [int(i) for i in graph.outputs]
    while frontier:
        index = frontier.pop()
        users = [o for o in graph.operators if index in [int(i) for i in o.inputs]]
        if not users or index in outputs:
            return None
        for user in users:
            code, first = operator_name(model, user), int(user.inputs[0])
            if code == "REAL" or (
                code == "CAST" and graph.tensors[int(user.outputs[0])].type == FLOAT32
            ):
                casts.append(user)
            elif code in _SHAPE_ONLY and first == index:
                chain.append(int(user.outputs[0]))
                frontier.append(int(user.outputs[0]))
            else:
                return None
    return chain, casts


# --- MediaPipe's transposed convolution ---------------------------------------------------


def _transpose_conv_bias(model: Any) -> bool:
    """Each ``Convolution2DTransposeBias`` custom op with a static output shape, as the
    builtin TRANSPOSE_CONV then an ADD of its bias."""
    from tensorflow.lite.python import schema_py_generated as schema

    changed = False
    for graph in model.subgraphs or []:
        for op in list(graph.operators or []):
            code = model.operatorCodes[op.opcodeIndex].customCode
            if code != b"Convolution2DTransposeBias" or op.customOptions is None:
                continue
            image, weights, bias = (int(i) for i in op.inputs)
            output = graph.tensors[int(op.outputs[0])]
            signature = output.shapeSignature
            params = np.frombuffer(bytes(op.customOptions), np.int32)
            # TfLiteTransposeConvParams: padding (1 same, 2 valid), stride_width, stride_height
            if len(params) < 3 or params[0] not in (1, 2) or -1 in list(signature or []):
                continue
            shape = np.array(output.shape, np.int32)
            graph.tensors.append(_constant_tensor(model, shape, "transpose_conv_shape"))
            unbiased = schema.TensorT()
            unbiased.shape, unbiased.type = shape.copy(), output.type
            unbiased.name = output.name + b"/unbiased"
            unbiased.buffer = _add_buffer(model, np.zeros(0, np.uint8))
            graph.tensors.append(unbiased)
            conv = schema.OperatorT()
            conv.opcodeIndex = _opcode(model, schema.BuiltinOperator.TRANSPOSE_CONV)
            conv.inputs = np.array([len(graph.tensors) - 2, weights, image], np.int32)
            conv.outputs = np.array([len(graph.tensors) - 1], np.int32)
            conv.builtinOptionsType = schema.BuiltinOptions.TransposeConvOptions
            conv.builtinOptions = schema.TransposeConvOptionsT()
            conv.builtinOptions.padding = (
                schema.Padding.SAME if params[0] == 1 else schema.Padding.VALID
            )
            conv.builtinOptions.strideW, conv.builtinOptions.strideH = (
                int(params[1]),
                int(params[2]),
            )
            op.opcodeIndex = _opcode(model, schema.BuiltinOperator.ADD)
            op.inputs = np.array([len(graph.tensors) - 1, bias], np.int32)
            op.customOptions, op.builtinOptionsType = None, schema.BuiltinOptions.AddOptions
            op.builtinOptions = schema.AddOptionsT()
            graph.operators.insert(graph.operators.index(op), conv)
            changed = True
    return changed


# --- flatbuffer plumbing ------------------------------------------------------------------


def model_bytes(model: Any) -> bytes:
    """A flatbuffer model object (``schema.ModelT``) written out."""
    from tensorflow.lite.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def read_model(path: Path) -> Any:
    """The ``.tflite`` file as TensorFlow's flatbuffer object model (``schema.ModelT``)."""
    from tensorflow.lite.python import schema_py_generated as schema

    return schema.ModelT.InitFromPackedBuf(bytearray(path.read_bytes()), 0)


def operator_name(model: Any, op: Any) -> str:
    """An operator's builtin name ("DENSIFY", "RFFT2D"), or "" for a custom op."""
    from tensorflow.lite.python import schema_py_generated as schema

    code = model.operatorCodes[op.opcodeIndex]
    number = max(code.builtinCode, code.deprecatedBuiltinCode)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    return "" if code.customCode else names.get(number, "")


def _opcode(model: Any, builtin: int) -> int:
    """The index of ``builtin``'s operator code, added when the model has none."""
    from tensorflow.lite.python import schema_py_generated as schema

    for index, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin and not code.customCode:
            return index
    code = schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _add_buffer(model: Any, value: np.ndarray) -> int:
    from tensorflow.lite.python import schema_py_generated as schema

    buffer = schema.BufferT()
    buffer.data = np.frombuffer(np.ascontiguousarray(value).tobytes(), np.uint8)
    model.buffers.append(buffer)
    return len(model.buffers) - 1


def _constant_tensor(model: Any, value: np.ndarray, name: str) -> Any:
    """A new constant tensor holding ``value`` (float32 or int32)."""
    from tensorflow.lite.python import schema_py_generated as schema

    tensor = schema.TensorT()
    tensor.shape = np.array(value.shape, np.int32)
    tensor.type = FLOAT32 if value.dtype == np.float32 else INT32
    tensor.buffer = _add_buffer(model, value)
    tensor.name = f"onnxferry/{name}".encode()
    return tensor


def tensor_name(name: Any) -> str:
    """A flatbuffer name (bytes) as text."""
    return name.decode(errors="replace") if isinstance(name, bytes) else str(name)
