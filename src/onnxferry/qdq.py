"""Quantized operators (QOperator form) written as QDQ: DequantizeLinear, the float operator
and QuantizeLinear, which converters that stop at the quantized operators take.

    counts = as_qdq(proto)                 # in place: Counter({"QLinearConv": 2, ...})
    given, counts = with_qdq(model)        # a new Model when it had any, else ``model``
    quantizes_activations(proto)           # True: it rounds values to steps (QDQ too)
    given, counts = with_float_products(model)   # MatMulInteger, ConvInteger: float, exact

ONNX Runtime's ``quantize_static(quant_format=QOperator)``, Intel Neural Compressor and the
ONNX Model Zoo's ``-int8`` models compute in ``QLinearConv``, ``QLinearMatMul`` (standard
ONNX) and ``com.microsoft`` operators only ONNX Runtime runs (``QGemm``, ``QLinearAdd``,
``QLinearMul``, ``QLinearSigmoid``, ``QLinearLeakyRelu``, ``QLinearAveragePool``,
``QLinearGlobalAveragePool``, ``QLinearConcat``, ``QLinearSoftmax``). OpenVINO's frontend
refused the ``com.microsoft`` ones and onnx2tf's ``QLinearConv`` failed on per-channel weights;
both convert QDQ. Each node becomes ``DequantizeLinear`` of its inputs (a bias in int32 at
scale ``x_scale * w_scale``), the float operator with the node's attributes, and
``QuantizeLinear`` at the output's scale and zero point: what a QDQ export of the same model
holds, and what ONNX Runtime's kernels compute up to the rounding of intermediate values.

The packages' parity checks take ONNX Runtime's run of the QDQ form, every optimization off
(the float operators between Q/DQ, as the converters compute them), as the reference's second
opinion: an output moves by a step of its scale between ONNX Runtime's integer kernels and
that path, which is the runtimes' noise, not the converter's error.

A node that cannot be written so is kept: per-axis scales before opset 13 (DequantizeLinear
had no ``axis``), ``channels_last`` pooling, a ``QLinearSoftmax`` of the pre-13 kind.

``quantize_dynamic``'s form quantizes activations at scales computed per call
(DynamicQuantizeLinear) and multiplies integers (``MatMulInteger``, ``ConvInteger``), which
onnx2tf writes as TensorFlow ops LiteRT's builtins lack: ``as_float_products`` writes those as
exact float products. ONNX Runtime's u8s8 kernels saturate on CPUs without VNNI where
OpenVINO's and LiteRT's products are exact, so the checks' second opinion runs the float form.
In every quantized form a float rounding flips values on a step's edge, and the flips grow
layer by layer, most where the steps are computed per call: ``parity.unoptimized_ort``
measures that for a model that ``quantizes_activations``. ``DynamicQuantizeLSTM``
(``com.microsoft``) is kept: onnx2tf refuses it.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from .graphs import NodeWriter, walk_graphs
from .model import Model

if TYPE_CHECKING:
    import onnx

MS_DOMAIN = "com.microsoft"
STANDARD = frozenset({"QLinearConv", "QLinearMatMul"})
CONTRIB = frozenset(
    {"QGemm", "QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu",
     "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConcat", "QLinearSoftmax"}
)  # fmt: skip
QDQ_NOTE = (
    "its quantized operators ({ops}) were given to {tool} as DequantizeLinear, the float "
    "operator and QuantizeLinear (QDQ), which it converts"
)
LAYOUT = frozenset(
    {"Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "MaxPool", "Identity", "Slice",
     "Gather"}
)  # fmt: skip
"""Ops QOperator models run on the integer tensors between quantized operators (a Flatten
before a QGemm): given the float values between a DequantizeLinear and a QuantizeLinear at
the tensor's own scale, as a QDQ export has them."""
INTEGER = frozenset({"MatMulInteger", "ConvInteger"})
"""Ops multiplying integers into int32 (``quantize_dynamic``'s), which LiteRT's builtins
lack."""
INTEGER_NOTE = (
    "its integer products ({ops}) were given to {tool} as the float operator on the integers "
    "less their zero points, cast to int32 (exact while a sum stays under 2^24; their int8 "
    "weights become float32, 4 bytes each), which LiteRT's builtins run"
)
ROUNDING = STANDARD | CONTRIB | {
    "QuantizeLinear", "DynamicQuantizeLinear", "DynamicQuantizeLSTM", "DynamicQuantizeMatMul"
}  # fmt: skip
"""Ops that round values to the steps of a quantization: QDQ's QuantizeLinear, the QOperator
ops, ``quantize_dynamic``'s (at scales computed from the values)."""
_UNARY = {"QLinearSigmoid": "Sigmoid", "QLinearLeakyRelu": "LeakyRelu"}
_POOLS = {"QLinearAveragePool": "AveragePool", "QLinearGlobalAveragePool": "GlobalAveragePool"}


def quantized_ops(proto: onnx.ModelProto) -> Counter[str]:
    """How many QOperator nodes the main graph holds, by type."""
    return Counter(node.op_type for node in proto.graph.node if _quantized(node))


def quantizes_activations(proto: onnx.ModelProto) -> bool:
    """Whether any graph of ``proto`` rounds computed values to quantization steps
    (``ROUNDING``, on anything but a weight): a float rounding before one flips a value on a
    step's edge, so its outputs move by steps, not roundings, between runtimes."""
    for graph in walk_graphs(proto.graph):
        weights = {t.name for t in graph.initializer}
        if any(n.op_type in ROUNDING and n.input[0] not in weights for n in graph.node if n.input):
            return True
    return False


def output_steps(proto: onnx.ModelProto) -> dict[str, float]:
    """The main graph's outputs that a DequantizeLinear writes at one constant scale, by name:
    their values lie on that step's grid (a QOperator model's, once ``as_qdq``).

        output_steps(proto)                # {"probs": 0.00392}
    """
    from onnx import numpy_helper

    scales = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    outputs = {o.name for o in proto.graph.output}
    steps = {}
    for node in proto.graph.node:
        if node.op_type == "DequantizeLinear" and node.output[0] in outputs:
            scale = scales.get(node.input[1])
            if scale is not None and scale.size == 1 and float(scale.ravel()[0]) > 0:
                steps[node.output[0]] = float(scale.ravel()[0])
    return steps


def with_qdq(model: Model) -> tuple[Model, Counter[str]]:
    """``model`` with its QOperator nodes as QDQ (``as_qdq``) and how many of each;
    ``model`` itself, and no counts, when none could be."""
    return model.rewritten(as_qdq) if quantized_ops(model.proto) else (model, Counter())


def integer_ops(proto: onnx.ModelProto) -> Counter[str]:
    """How many integer products (``INTEGER``) the main graph holds, by type."""
    return Counter(node.op_type for node in proto.graph.node if _integer(node))


def with_float_products(model: Model) -> tuple[Model, Counter[str]]:
    """``model`` with its integer products as float ones (``as_float_products``) and how many
    of each; ``model`` itself, and no counts, when it has none."""
    return model.rewritten(as_float_products) if integer_ops(model.proto) else (model, Counter())


def as_float_products(proto: onnx.ModelProto) -> Counter[str]:
    """Rewrite the main graph's MatMulInteger and ConvInteger as MatMul and Conv of float
    operands, ``Cast(x) - Cast(zero_point)`` (folded where both are weights), and a Cast of
    the result to int32, in place; how many of each were rewritten.

    The operands are integers below 256 in size, so the float products and their sums are
    exact up to 2^24 (a sum past it rounds by parts in 10^7, as a float layer's would): the
    int32 result is ONNX Runtime's, and what follows it (the bias, the scales) is unchanged.
    """
    return _ProductWriter(proto).rewrite(proto) if integer_ops(proto) else Counter()


def _integer(node: onnx.NodeProto) -> bool:
    return node.domain in ("", "ai.onnx") and node.op_type in INTEGER


def _quantized(node: onnx.NodeProto) -> bool:
    if node.domain == MS_DOMAIN:
        return node.op_type in CONTRIB
    return node.domain in ("", "ai.onnx") and node.op_type in STANDARD


def as_qdq(proto: onnx.ModelProto) -> Counter[str]:
    """Rewrite the main graph's QOperator nodes as QDQ, in place (module docstring); how many
    of each were rewritten."""
    return _Writer(proto).rewrite(proto) if quantized_ops(proto) else Counter()


class _Writer(NodeWriter):
    """Emits one node's QDQ form at a time, with fresh names."""

    def __init__(self, proto: onnx.ModelProto) -> None:
        super().__init__(proto)
        self.opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)
        self.weights = {t.name: t for t in proto.graph.initializer}
        self.sizes = {t.name: _size(t.dims) for t in proto.graph.initializer}
        """Elements of each weight: a scale of more than one is per axis."""
        self.params: dict[str, tuple[str, str]] = {}
        """The scale and zero point of each integer tensor a QuantizeLinear or a quantized
        operator wrote (and of what a layout op made of one)."""

    def learn(self, node: onnx.NodeProto) -> None:
        """The scale and zero point of a kept QuantizeLinear's output."""
        if node.op_type == "QuantizeLinear" and len(node.input) > 1:
            self.params[node.output[0]] = (
                node.input[1],
                node.input[2] if len(node.input) > 2 else "",
            )

    def layout(self, node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
        """``node`` on the float values of its integer input, quantized again at the same
        scale and zero point (exact: these ops only move or pick values)."""
        if len(node.output) != 1:
            return None
        from onnx import helper

        self.nodes, self.stem = [], node.name or node.output[0]
        scale, zero = self.params[node.input[0]]
        values = self.dequantize(node.input[0], scale, zero)
        moved = self.fresh(f"{self.stem}/{node.op_type}")
        attrs = {a.name: _value(a) for a in node.attribute}
        inputs = [values, *node.input[1:]]
        self.nodes.append(helper.make_node(node.op_type, inputs, [moved], name=moved, **attrs))
        self.quantize(moved, scale, zero, node.output[0])
        return self.nodes

    def bias_scale(self, x_scale: str, w_scale: str) -> str:
        """``x_scale * w_scale``: a constant where both are (converters fold a constant
        int32 bias to float; onnx2tf's DequantizeLinear of int32 with a computed scale is
        wrong), else a Mul."""
        from onnx import numpy_helper

        if x_scale in self.weights and w_scale in self.weights:
            x, w = (numpy_helper.to_array(self.weights[n]) for n in (x_scale, w_scale))
            return self.const(f"{self.stem}/bias_scale", (x * w).astype(w.dtype))
        return self.op("Mul", [x_scale, w_scale])

    def per_axis(self, scale: str) -> bool:
        return self.sizes.get(scale, 1) != 1

    def dequantize(self, x: str, scale: str, zero: str = "", axis: int | None = None) -> str:
        """``x`` as float; ``axis`` for a per-axis scale."""
        inputs = [x, scale, *([zero] if zero else [])]
        if axis is not None and self.per_axis(scale):
            return self.op("DequantizeLinear", inputs, axis=axis)
        return self.op("DequantizeLinear", inputs)

    def quantize(self, x: str, scale: str, zero: str, out: str) -> str:
        self.params[out] = (scale, zero)
        return self.op("QuantizeLinear", [x, scale, *([zero] if zero else [])], out)

    def counted(self, node: onnx.NodeProto) -> bool:
        return _quantized(node)  # not the layout ops between them

    def write(self, node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
        """The QDQ nodes for ``node`` (its outputs keep their names), or None to keep it."""
        if not _quantized(node):
            moves = node.op_type in LAYOUT and node.input and node.input[0] in self.params
            return self.layout(node) if moves else None
        self.nodes, self.stem = [], node.name or node.output[0]
        inputs = [*node.input, *[""] * 9]  # optional inputs absent at the end read as ""
        attrs = {a.name: _value(a) for a in node.attribute}
        kind = node.op_type
        linear = kind in ("QLinearConv", "QLinearMatMul", "QGemm")
        if linear and self.opset < 13 and self.per_axis(inputs[4]):
            return None  # DequantizeLinear's axis came at opset 13
        if kind == "QGemm" and attrs.get("alpha", 1.0) != 1.0:
            return None  # its int32 bias would be scaled by alpha too
        if kind in _POOLS and attrs.pop("channels_last", 0):
            return None
        if kind == "QLinearSoftmax":
            if min(attrs.pop("opset", 13), self.opset) < 13:  # the 2-D softmax of before
                return None
            attrs.setdefault("axis", -1)
        out = node.output[0]
        if linear:
            self._linear(node, inputs, attrs)
        elif kind in ("QLinearAdd", "QLinearMul"):
            a = self.dequantize(inputs[0], inputs[1], inputs[2])
            b = self.dequantize(inputs[3], inputs[4], inputs[5])
            result = self.op(kind.removeprefix("QLinear"), [a, b])
            self.quantize(result, inputs[6], inputs[7], out)
        elif kind in _UNARY or kind in _POOLS or kind == "QLinearSoftmax":
            x = self.dequantize(inputs[0], inputs[1], inputs[2])
            float_op = _UNARY.get(kind) or _POOLS.get(kind) or "Softmax"
            self.quantize(self.op(float_op, [x], **attrs), inputs[3], inputs[4], out)
        elif kind == "QLinearConcat":  # y_scale, y_zero_point, then (x, scale, zero) per input
            trios = [inputs[i : i + 3] for i in range(2, len(node.input), 3)]
            parts = [self.dequantize(x, scale, zero) for x, scale, zero in trios]
            self.quantize(self.op("Concat", parts, **attrs), inputs[0], inputs[1], out)
        return self.nodes

    def _linear(self, node: onnx.NodeProto, inputs: list[str], attrs: dict[str, Any]) -> None:
        """QLinearConv, QLinearMatMul and QGemm: the weights per output channel (Conv's axis
        0, MatMul's last, Gemm's by ``transB``), an int32 bias at ``x_scale * w_scale``."""
        kind, out = node.op_type, node.output[0]
        x = self.dequantize(inputs[0], inputs[1], inputs[2])
        if kind == "QLinearConv":
            w = self.dequantize(inputs[3], inputs[4], inputs[5], axis=0)
            bias = inputs[8]
            y_scale, y_zero = inputs[6], inputs[7]
            float_op = "Conv"
        elif kind == "QLinearMatMul":
            w = self.dequantize(
                inputs[3], inputs[4], inputs[5], axis=-1 if self.opset >= 13 else None
            )
            bias, y_scale, y_zero = "", inputs[6], inputs[7]
            float_op = "MatMul"
        else:  # QGemm: A, a_scale, a_zero, B, b_scale, b_zero, C, y_scale, y_zero
            w = self.dequantize(
                inputs[3], inputs[4], inputs[5], axis=0 if attrs.get("transB", 0) else 1
            )
            bias, y_scale, y_zero = inputs[6], inputs[7], inputs[8]
            float_op = "Gemm"
        if bias:
            scale = self.bias_scale(inputs[1], inputs[4])
            self.sizes[scale] = self.sizes.get(inputs[4], 1)
            bias = self.dequantize(bias, scale, axis=0)
        result = self.op(float_op, [x, w, *([bias] if bias else [])], **attrs)
        if y_scale:
            self.quantize(result, y_scale, y_zero, out)
        else:  # QGemm without y_scale gives float
            self.op("Identity", [result], out)


class _ProductWriter(NodeWriter):
    """Emits one integer product's float form at a time (``as_float_products``)."""

    def __init__(self, proto: onnx.ModelProto) -> None:
        super().__init__(proto)
        self.weights = {t.name: t for t in proto.graph.initializer}

    def write(self, node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
        if not _integer(node):
            return None
        from onnx import TensorProto

        self.nodes, self.stem = [], node.name or node.output[0]
        x, w, x_zero, w_zero = [*node.input, "", ""][:4]
        attrs = {a.name: _value(a) for a in node.attribute}
        if node.op_type == "MatMulInteger":  # a_zero_point: per row of A ([M] -> [M, 1])
            product = "MatMul"
            a, b = self.operand(x, x_zero, trailing=1), self.operand(w, w_zero, trailing=0)
        else:  # ConvInteger: x_zero_point a scalar, w_zero_point per output channel
            product = "Conv"
            rank = len(self.weights[w].dims) if w in self.weights else 4
            a, b = self.operand(x, x_zero, trailing=0), self.operand(w, w_zero, trailing=rank - 1)
        result = self.op(product, [a, b], **attrs)
        self.op("Cast", [result], node.output[0], to=TensorProto.INT32)
        return self.nodes

    def operand(self, x: str, zero: str, trailing: int) -> str:
        """``x - zero`` as float: a weight when both are, else Cast and Sub; a zero point of
        more than one value gets ``trailing`` axes of 1 to broadcast."""
        import numpy as np
        from onnx import TensorProto, numpy_helper

        if x in self.weights and (not zero or zero in self.weights):
            value = numpy_helper.to_array(self.weights[x]).astype(np.float32)
            if zero:
                offset = numpy_helper.to_array(self.weights[zero]).astype(np.float32)
                value = value - offset.reshape(offset.shape + (1,) * trailing * (offset.size > 1))
            return self.const(f"{self.stem}/{x}_float", value)
        as_float = self.op("Cast", [x], to=TensorProto.FLOAT)
        if not zero:
            return as_float
        zero_float = self.op("Cast", [zero], to=TensorProto.FLOAT)
        if trailing and zero in self.weights and _size(self.weights[zero].dims) > 1:
            shape = self.const(f"{self.stem}/zero_shape", np.array([-1] + [1] * trailing))
            zero_float = self.op("Reshape", [zero_float, shape])
        return self.op("Sub", [as_float, zero_float])


def _size(dims: Any) -> int:
    size = 1
    for d in dims:
        size *= int(d)
    return size


def _value(attribute: onnx.AttributeProto) -> Any:
    from onnx import helper

    return helper.get_attribute_value(attribute)
