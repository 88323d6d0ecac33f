"""ONNX Runtime's fused transformer operators written back as the standard ONNX they fuse,
for converters that know only the standard set.

    counts = unfuse(proto)                # in place: Counter({"Attention": 1, ...})
    given, counts = with_unfused(model)   # a new Model when it had any, else ``model``

ONNX Runtime's transformers optimizer (``onnxruntime.transformers.optimizer``, Optimum's O2 to
O4) fuses a BERT's embeddings, attention, GELU and residual LayerNorms into ``com.microsoft``
operators, and writes ``LayerNormalization`` into the ONNX domain of models whose opset
predates it (17). Only ONNX Runtime runs those; onnx2tf stopped at the first one. Each is
written back as the operators it stands for, computing what ONNX Runtime's CPU kernels compute:

- ``EmbedLayerNormalization``: word, position (0..S-1 unless given) and segment embeddings
  gathered and summed, then layer-normalized; its ``mask_index`` is the row sums of the mask
  (int32), which ``Attention`` reads as each row's length;
- ``Attention`` (no past state): the packed QKV projection, heads split, ``softmax(Q K^T *
  scale + mask) V`` and heads joined; a 1-D ``mask_index`` masks keys at or past each row's
  length, a 2-D one the zeros of a raw mask, both with ``mask_filter_value`` (-10000), and
  ``unidirectional`` the keys after each query;
- ``SkipLayerNormalization``: input + skip (+ bias), layer-normalized; its fourth output is
  that sum;
- ``BiasGelu``, ``Gelu`` (erf), ``FastGelu`` (tanh) and ``LayerNormalization`` before opset
  17 (mean and variance over the last axis).

A node that uses what is not written here (a past state, a mask of another shape, the mean
and inverse deviation outputs of a normalization) is left as it is.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np

from .graphs import NodeWriter, iter_nodes
from .model import Model

if TYPE_CHECKING:
    import onnx

MS_DOMAIN = "com.microsoft"
FUSED = frozenset(
    {"EmbedLayerNormalization", "Attention", "SkipLayerNormalization", "BiasGelu", "Gelu",
     "FastGelu"}
)  # fmt: skip
"""The ``com.microsoft`` operators written back here."""
UNFUSED_NOTE = (
    "its ONNX Runtime fused operators ({ops}) were given to {tool} as the standard ONNX they "
    "stand for: {tool} knows only the standard set"
)


def fused_ops(proto: onnx.ModelProto) -> Counter[str]:
    """How many of each fused operator the main graph holds (``unfuse`` writes back those it
    can: not an Attention with a past state, say)."""
    return Counter(node.op_type for node in proto.graph.node if _fused(node, _opset(proto)))


def with_unfused(model: Model) -> tuple[Model, Counter[str]]:
    """``model`` with its fused operators written back (``unfuse``) and how many of each;
    ``model`` itself, and no counts, when it has none."""
    return model.rewritten(unfuse) if fused_ops(model.proto) else (model, Counter())


def _opset(proto: onnx.ModelProto) -> int:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)


def _fused(node: onnx.NodeProto, opset: int) -> bool:
    if node.domain == MS_DOMAIN:
        return node.op_type in FUSED
    return node.op_type == "LayerNormalization" and node.domain in ("", "ai.onnx") and opset < 17


def unfuse(proto: onnx.ModelProto) -> Counter[str]:
    """Rewrite the main graph's fused operators as standard ONNX, in place (module
    docstring); how many of each were rewritten."""
    return _Writer(proto).rewrite(proto)


class _Writer(NodeWriter):
    """Emits the standard nodes for one fused node at a time, with fresh names, constants of
    the right float type, and ops spelled for the model's opset."""

    def __init__(self, proto: onnx.ModelProto) -> None:
        super().__init__(proto)
        self.opset = _opset(proto)
        self.weights = {t.name: tuple(t.dims) for t in proto.graph.initializer}
        """The shape of every weight (Attention's packed QKV sizes come from it)."""
        self.types: dict[str, int] = {t.name: t.data_type for t in proto.graph.initializer}
        self.ranks: dict[str, int] = {}
        """Ranks where known: graph inputs, and what Cast or Identity pass on (a mask)."""
        for value in proto.graph.input:
            tensor = value.type.tensor_type
            self.types[value.name] = tensor.elem_type
            if tensor.HasField("shape"):
                self.ranks[value.name] = len(tensor.shape.dim)
        used = [n for node in iter_nodes(proto) for n in node.input]
        self.used = set(used) | {o.name for o in proto.graph.output}

    # --- what is known of a tensor's type, node by node ---------------------------------

    def learn(self, node: onnx.NodeProto) -> None:
        """Types of ``node``'s outputs: a Cast's target, a comparison's bool, an index's
        int64, a Where's values', otherwise its first typed input's (what reaches a fused
        node is a float path). Ranks: what a Cast or Identity passes on, and the 1 of an
        EmbedLayerNormalization's ``mask_index``."""
        from onnx import TensorProto

        if node.op_type in ("Cast", "Identity") and node.input[0] in self.ranks:
            self.ranks[node.output[0]] = self.ranks[node.input[0]]
        if node.op_type == "EmbedLayerNormalization" and len(node.output) > 1:
            self.ranks[node.output[1]] = 1
        if node.op_type == "Cast":
            kind = next(a.i for a in node.attribute if a.name == "to")
        elif node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            kind = node.attribute[0].t.data_type
        elif node.op_type in ("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not",
                              "And", "Or", "IsNaN", "IsInf"):  # fmt: skip
            kind = TensorProto.BOOL
        elif node.op_type in ("Shape", "Size", "ArgMax", "ArgMin", "NonZero"):
            kind = TensorProto.INT64
        elif node.op_type == "Where":  # its condition first, then the values
            kind = self.types.get(node.input[1], 0)
        elif node.op_type == "ConstantOfShape":
            kind = node.attribute[0].t.data_type if node.attribute else TensorProto.FLOAT
        else:
            kind = next((self.types[n] for n in node.input if n in self.types), 0)
        for out in node.output:
            if kind:
                self.types[out] = kind

    def _float(self, name: str) -> np.dtype[np.floating]:
        from onnx import helper

        kind = self.types.get(name, 1)
        dtype = helper.tensor_dtype_to_np_dtype(kind) if kind else np.dtype(np.float32)
        return dtype if dtype.kind == "f" else np.dtype(np.float32)

    # --- naming and emitting ------------------------------------------------------------

    def axes_op(self, op_type: str, x: str, axes: list[int], since: int, **attrs: Any) -> str:
        """Unsqueeze, ReduceSum, ReduceMean: axes as an input from opset ``since``, an
        attribute before."""
        if self.opset >= since:
            return self.op(op_type, [x, self.const(f"{self.stem}/axes", np.array(axes))], **attrs)
        return self.op(op_type, [x], axes=axes, **attrs)

    def write(self, node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
        """The standard nodes for ``node`` (its outputs keep their names), or None to keep
        it."""
        if not _fused(node, self.opset):
            return None
        self.nodes, self.stem = [], node.name or node.output[0]
        write = {
            "Gelu": self._erf_gelu,
            "BiasGelu": self._bias_gelu,
            "FastGelu": self._fast_gelu,
            "LayerNormalization": self._layer_normalization,
            "SkipLayerNormalization": self._skip_layer_normalization,
            "EmbedLayerNormalization": self._embed_layer_normalization,
            "Attention": self._attention,
        }[node.op_type]
        before = len(self.constants)
        if write(node) is False:
            del self.constants[before:]
            return None
        return self.nodes

    def _needs(self, node: onnx.NodeProto, *indices: int) -> bool:
        """Whether any of these outputs of ``node`` is read (or a graph output)."""
        return any(i < len(node.output) and node.output[i] in self.used for i in indices)

    @staticmethod
    def _attr(node: onnx.NodeProto, name: str, default: float) -> float:
        """A numeric attribute of ``node`` (``default`` when absent)."""
        found = next((a for a in node.attribute if a.name == name), None)
        if found is None:
            return default
        return float(found.f) if found.type == found.FLOAT else float(found.i)

    @staticmethod
    def _ints(node: onnx.NodeProto, name: str) -> list[int]:
        return next((list(a.ints) for a in node.attribute if a.name == name), [])

    def positions(self, x: str) -> str:
        """``[0, 1, ..., S - 1]`` for ``x``'s axis 1 (a sequence's positions)."""
        length = self.op("Gather", [self.op("Shape", [x]), self.const("one", np.array(1))])
        start, step = self.const("start", np.array(0)), self.const("step", np.array(1))
        return self.op("Range", [start, length, step])

    # --- the pieces ---------------------------------------------------------------------

    def layer_norm(self, x: str, gamma: str, beta: str, epsilon: float, out: str) -> str:
        """LayerNormalization over the last axis: the op from opset 17, mean and variance
        before."""
        if self.opset >= 17:
            inputs = [x, gamma, *([beta] if beta else [])]
            return self.op("LayerNormalization", inputs, out, axis=-1, epsilon=epsilon)
        dtype = self._float(gamma)
        mean = self.axes_op("ReduceMean", x, [-1], 18, keepdims=1)
        centred = self.op("Sub", [x, mean])
        variance = self.axes_op("ReduceMean", self.op("Mul", [centred, centred]), [-1], 18)
        eps = self.const(f"{self.stem}/epsilon", np.array(epsilon, dtype))
        deviation = self.op("Sqrt", [self.op("Add", [variance, eps])])
        scaled = self.op("Mul", [self.op("Div", [centred, deviation]), gamma])
        return self.op("Add", [scaled, beta], out) if beta else self.op("Identity", [scaled], out)

    def gelu(self, x: str, out: str, *, tanh: bool) -> str:
        dtype = self._float(x)
        half = self.const(f"{self.stem}/half", np.array(0.5, dtype))
        one = self.const(f"{self.stem}/one", np.array(1.0, dtype))
        if tanh:  # 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))
            cube = self.op("Mul", [self.op("Mul", [x, x]), x])
            coef = self.const(f"{self.stem}/coef", np.array(0.044715, dtype))
            inner = self.op("Add", [x, self.op("Mul", [cube, coef])])
            root = self.const(f"{self.stem}/root", np.array(math.sqrt(2 / math.pi), dtype))
            wave = self.op("Tanh", [self.op("Mul", [inner, root])])
        else:  # 0.5 x (1 + erf(x / sqrt(2)))
            root = self.const(f"{self.stem}/root", np.array(math.sqrt(2), dtype))
            wave = self.op("Erf", [self.op("Div", [x, root])])
        return self.op("Mul", [self.op("Mul", [x, half]), self.op("Add", [wave, one])], out)

    # --- one method per operator --------------------------------------------------------

    def _erf_gelu(self, node: onnx.NodeProto) -> None:
        self.gelu(node.input[0], node.output[0], tanh=False)

    def _bias_gelu(self, node: onnx.NodeProto) -> None:
        self.gelu(self.op("Add", node.input[:2]), node.output[0], tanh=False)

    def _fast_gelu(self, node: onnx.NodeProto) -> None:
        x = node.input[0]
        if len(node.input) > 1 and node.input[1]:
            x = self.op("Add", node.input[:2])
        self.gelu(x, node.output[0], tanh=True)

    def _layer_normalization(self, node: onnx.NodeProto) -> bool | None:
        if self._needs(node, 1, 2) or self._attr(node, "axis", -1) != -1:
            return False
        beta = node.input[2] if len(node.input) > 2 else ""
        epsilon = self._attr(node, "epsilon", 1e-5)
        self.layer_norm(node.input[0], node.input[1], beta, epsilon, node.output[0])
        return None

    def _skip_layer_normalization(self, node: onnx.NodeProto) -> bool | None:
        if self._needs(node, 1, 2):
            return False
        total = self.op("Add", node.input[:2])
        if len(node.input) > 4 and node.input[4]:
            total = self.op("Add", [total, node.input[4]])
        if self._needs(node, 3):
            self.op("Identity", [total], node.output[3])
        beta = node.input[3] if len(node.input) > 3 else ""
        epsilon = self._attr(node, "epsilon", 1e-12)
        self.layer_norm(total, node.input[2], beta, epsilon, node.output[0])
        return None

    def _embed_layer_normalization(self, node: onnx.NodeProto) -> bool | None:
        from onnx import TensorProto

        inputs = [*node.input, *[""] * (9 - len(node.input))]
        ids, segments, words, positions, segment_table, gamma, beta, mask, position_ids = inputs
        if self._needs(node, 1) and not mask:
            return False
        total = self.op("Gather", [words, ids], axis=0)
        position_ids = position_ids or self.positions(ids)
        total = self.op("Add", [total, self.op("Gather", [positions, position_ids], axis=0)])
        if segments and segment_table:
            total = self.op("Add", [total, self.op("Gather", [segment_table, segments], axis=0)])
        if self._needs(node, 2):
            self.op("Identity", [total], node.output[2])
        epsilon = self._attr(node, "epsilon", 1e-12)
        self.layer_norm(total, gamma, beta, epsilon, node.output[0])
        if self._needs(node, 1):
            lengths = self.axes_op("ReduceSum", mask, [1], 13, keepdims=0)
            self.op("Cast", [lengths], node.output[1], to=TensorProto.INT32)
            self.ranks[node.output[1]] = 1
        return None

    def _attention(self, node: onnx.NodeProto) -> bool | None:
        from onnx import helper

        inputs = [*node.input, *[""] * (7 - len(node.input))]
        x, weights, bias, mask = inputs[:4]
        heads = int(self._attr(node, "num_heads", 0))
        if any(inputs[4:]) or len([o for o in node.output if o]) > 1 or not heads:
            return False  # a past state, an attention bias: not written here
        if weights not in self.weights or (bias and bias not in self.weights):
            return False
        total = self.weights[weights][1]
        sizes = self._ints(node, "qkv_hidden_sizes") or [total // 3] * 3
        if sum(sizes) != total or sizes[0] != sizes[1] or any(s % heads for s in sizes):
            return False
        dtype = self._float(weights)
        head = sizes[0] // heads
        scale = self._attr(node, "scale", 0.0) or 1 / math.sqrt(head)
        filler = self._attr(node, "mask_filter_value", -10000.0)
        packed = self.op("MatMul", [x, weights])
        if bias:
            packed = self.op("Add", [packed, bias])
        split = self.const(f"{self.stem}/sizes", np.array(sizes))
        q, k, v = (self.fresh(f"{self.stem}/{p}") for p in "qkv")
        if self.opset >= 13:
            self.nodes.append(helper.make_node("Split", [packed, split], [q, k, v], axis=2))
        else:
            self.nodes.append(helper.make_node("Split", [packed], [q, k, v], axis=2, split=sizes))
        self.learn(self.nodes[-1])

        def heads_first(t: str, width: int, perm: list[int]) -> str:
            shape = self.const(f"{self.stem}/shape", np.array([0, 0, heads, width // heads]))
            return self.op("Transpose", [self.op("Reshape", [t, shape])], perm=perm)

        q = heads_first(q, sizes[0], [0, 2, 1, 3])
        k = heads_first(k, sizes[1], [0, 2, 3, 1])
        v = heads_first(v, sizes[2], [0, 2, 1, 3])
        scores = self.op("MatMul", [q, k])
        scores = self.op("Mul", [scores, self.const(f"{self.stem}/scale", np.array(scale, dtype))])
        if mask:
            additive = self._mask(mask, x, dtype, filler)
            if additive is None:
                return False
            scores = self.op("Add", [scores, additive])
        if self._attr(node, "unidirectional", 0):
            scores = self.op("Add", [scores, self._causal(x, dtype, filler)])
        context = self.op("MatMul", [self.op("Softmax", [scores], axis=-1), v])
        joined = self.op("Transpose", [context], perm=[0, 2, 1, 3])
        shape = self.const(f"{self.stem}/joined", np.array([0, 0, sizes[2]]))
        self.op("Reshape", [joined, shape], node.output[0])
        return None

    def _mask(self, mask: str, x: str, dtype: np.dtype[np.floating], filler: float) -> str | None:
        """The additive mask ``[batch, 1, 1, keys]`` of a 1-D ``mask_index`` (each row's
        length) or a 2-D raw mask (1 keeps a key); None for any other."""
        from onnx import TensorProto

        rank = self.ranks.get(mask)  # 1: EmbedLayerNormalization's lengths; 2: a raw mask
        zero = self.const(f"{self.stem}/zero", np.array(0.0, dtype))
        fill = self.const(f"{self.stem}/filler", np.array(filler, dtype))
        if rank == 1:
            ends = self.op("Cast", [mask], to=TensorProto.INT64)
            kept = self.op("Less", [self.positions(x), self.axes_op("Unsqueeze", ends, [1], 13)])
        elif rank == 2:
            kept = self.op("Cast", [mask], to=TensorProto.BOOL)  # 1 keeps a key
        else:
            return None
        additive = self.op("Where", [kept, zero, fill])
        return self.axes_op("Unsqueeze", additive, [1, 2], 13)

    def _causal(self, x: str, dtype: np.dtype[np.floating], filler: float) -> str:
        """``[1, 1, S, S]``: ``filler`` where a key comes after its query."""
        positions = self.positions(x)
        queries = self.axes_op("Unsqueeze", positions, [1], 13)
        later = self.op("Greater", [positions, queries])
        zero = self.const(f"{self.stem}/zero", np.array(0.0, dtype))
        fill = self.const(f"{self.stem}/filler", np.array(filler, dtype))
        return self.axes_op("Unsqueeze", self.op("Where", [later, fill, zero]), [0, 1], 13)
