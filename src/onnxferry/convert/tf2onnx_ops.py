"""TensorFlow ops tf2onnx has no handler for, written here in ONNX ops it has.

    register_missing_ops()      # once per process, before a tf2onnx conversion

Found by converting every Keras 3 layer and activation (RESULTS.md, "Keras layers"):

- ``Erfc``: ``1 - Erf(x)``. TensorFlow's exact GELU (``tf.nn.gelu(approximate=False)``,
  Keras 3's ``activation="gelu"``) is ``0.5 * x * erfc(-x / sqrt(2))``, so every Keras model
  with an exact GELU (ViT, BERT-style encoders) stopped at it. Where erfc is below float32's
  step next to 1 (x > 3.9), ``1 - erf`` is 0; inside a GELU that is a difference of at most
  ``x * 1e-8``.
- ``Expm1`` (Keras' ``celu``, ``keras.ops.expm1``): ``Exp(x) - 1``; ``Log1p``
  (``keras.ops.log1p``): ``Log(1 + x)``. Both lose the digits below float32's step next to 1
  that the fused ops keep, an absolute difference under 1e-7.
- ``Bucketize`` (Keras' ``Discretization``): how many boundaries are at or below x, as int32.
- ``Xlogy``, ``Xdivy``, ``MulNoNan``: the product or quotient, 0 where TensorFlow defines it
  so (x == 0; y == 0 for MulNoNan).
- ``LookupTableFindV2`` between numbers (Keras' ``IntegerLookup``): ONNX-ML's LabelEncoder
  on the table's contents; tf2onnx's own handler (string <-> int64, a CategoryMapper) takes
  the rest.
- ``StringSplitV2`` with no separator (``tf.strings.split(text)``, Keras' TextVectorization):
  TensorFlow splits on runs of whitespace; tf2onnx handed onnxruntime-extensions' StringSplit
  the empty separator, which splits into characters. Here the separator is every ASCII
  whitespace character, empty pieces skipped: the same tokens. A separator of several
  characters is refused (onnxruntime-extensions would split at each of them).
- ``RFFT`` read through ``Real`` and ``Imag`` (``tf.signal.stft``, Keras' MelSpectrogram:
  the power spectrum is real^2 + imag^2): tf2onnx's RFFT writes the real and imaginary parts
  stacked on a leading axis but took only ComplexAbs as its reader; Real and Imag take
  their half of it.
- ``Equal`` / ``NotEqual`` of strings against one constant string, where tf2onnx writes
  onnxruntime-extensions' StringEqual (Keras' TextVectorization marks its padding tokens
  so): a CategoryMapper onto 1 and 0. StringEqual fails on a text with no tokens (an empty
  or all-punctuation string: its token list has no dims).

Handlers go into tf2onnx's own registry (``tf2onnx.handler.tf_op``), which every tf2onnx
entry point reads, Keras' ``model.export(format="onnx")`` included.
"""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def register_missing_ops() -> None:
    """Add this module's handlers to tf2onnx's registry (idempotent), after tf2onnx's own:
    a handler here for an op tf2onnx has replaces its."""
    import tf2onnx.tfonnx  # noqa: F401  (registers tf2onnx's handlers, custom opsets too)
    from tf2onnx.handler import tf_op

    for name, handler in HANDLERS.items():
        tf_op(name)(handler)
    tf_op(["Equal", "NotEqual"], domain="ai.onnx.contrib")(_StringEqual)
    tf_op("StringSplitV2", domain="ai.onnx.contrib")(_WhitespaceSplit)
    tf_op("RFFT")(_RFFT)


def _const(ctx: Any, node: Any, value: Any, like: str | None, what: str) -> str:
    """A constant holding ``value`` in ``like``'s dtype (for None: an array's own dtype, else
    int64); its output name."""
    import numpy as np
    from tf2onnx import utils

    if like is not None:
        value = np.array(value, utils.map_onnx_to_numpy_type(ctx.get_dtype(like)))
    elif not isinstance(value, np.ndarray):
        value = np.array(value, np.int64)
    return str(ctx.make_const(utils.make_name(f"{node.name}_{what}"), value).output[0])


def _op(ctx: Any, op_type: str, inputs: list[str], like: str, **attrs: Any) -> str:
    """A new node shaped and typed as ``like``; its output name."""
    made = ctx.make_node(
        op_type, inputs, attr=attrs, shapes=[ctx.get_shape(like)], dtypes=[ctx.get_dtype(like)]
    )
    return str(made.output[0])


def _become(ctx: Any, node: Any, op_type: str, inputs: list[str]) -> None:
    """Turn ``node`` into ``op_type`` on ``inputs``, keeping its outputs."""
    ctx.replace_inputs(node, inputs)
    node.type = op_type


class _Erfc:
    @classmethod
    def version_9(cls, ctx: Any, node: Any, **kwargs: Any) -> None:  # Erf: opset 9
        x = node.input[0]
        _become(ctx, node, "Sub", [_const(ctx, node, 1, x, "one"), _op(ctx, "Erf", [x], x)])


class _Expm1:
    @classmethod
    def version_1(cls, ctx: Any, node: Any, **kwargs: Any) -> None:
        x = node.input[0]
        _become(ctx, node, "Sub", [_op(ctx, "Exp", [x], x), _const(ctx, node, 1, x, "one")])


class _Log1p:
    @classmethod
    def version_1(cls, ctx: Any, node: Any, **kwargs: Any) -> None:
        x = node.input[0]
        _become(ctx, node, "Log", [_op(ctx, "Add", [x, _const(ctx, node, 1, x, "one")], x)])


class _ZeroWhere:
    """``combine(x, y)``, and 0 where input ``zero_at`` (0: x, 1: y) is 0."""

    zero_at = 0

    @classmethod
    def combine(cls, ctx: Any, x: str, y: str) -> str:
        return _op(ctx, "Mul", [x, y], x)

    @classmethod
    def version_9(cls, ctx: Any, node: Any, **kwargs: Any) -> None:  # Where: opset 9
        import onnx

        x, y = node.input[0], node.input[1]
        zero = _const(ctx, node, 0, x, "zero")
        operand = node.input[cls.zero_at]
        is_zero = ctx.make_node("Equal", [operand, zero], dtypes=[onnx.TensorProto.BOOL]).output[0]
        _become(ctx, node, "Where", [is_zero, zero, cls.combine(ctx, x, y)])


class _Xlogy(_ZeroWhere):
    @classmethod
    def combine(cls, ctx: Any, x: str, y: str) -> str:
        return _op(ctx, "Mul", [x, _op(ctx, "Log", [y], y)], x)


class _Xdivy(_ZeroWhere):
    @classmethod
    def combine(cls, ctx: Any, x: str, y: str) -> str:
        return _op(ctx, "Div", [x, y], x)


class _MulNoNan(_ZeroWhere):
    zero_at = 1


class _Bucketize:
    @classmethod
    def version_13(cls, ctx: Any, node: Any, **kwargs: Any) -> None:  # axes as inputs: 13
        import onnx
        from tf2onnx.graph_builder import GraphBuilder

        x = node.input[0]
        edges = _const(ctx, node, [float(b) for b in node.get_attr_value("boundaries")], x, "edges")
        column = GraphBuilder(ctx).make_unsqueeze({"data": x, "axes": [-1]})
        at_or_above = ctx.make_node(
            "GreaterOrEqual", [column, edges], dtypes=[onnx.TensorProto.BOOL]
        ).output[0]
        counts = ctx.make_node("Cast", [at_or_above], attr={"to": onnx.TensorProto.INT32}).output[0]
        _become(ctx, node, "ReduceSum", [counts, _const(ctx, node, [-1], None, "axes")])
        node.set_attr("keepdims", 0)


class _NumberLookup:
    """tf2onnx's LookupTableFindV2, and LabelEncoder where keys and values are numbers."""

    @classmethod
    def version_8(cls, ctx: Any, node: Any, initialized_tables: Any = None, **kwargs: Any) -> None:
        import onnx
        from tf2onnx import constants
        from tf2onnx.custom_opsets.onnx_ml import LookupTableFind

        numbers = {onnx.TensorProto.INT64: "int64s", onnx.TensorProto.FLOAT: "floats"}
        keys_type = numbers.get(ctx.get_dtype(node.input[1]))
        values_type = numbers.get(ctx.get_dtype(node.output[0]))
        table = node.inputs[0]
        while table.type == "Identity":
            table = table.inputs[0]
        contents = (initialized_tables or {}).get(table.get_attr_value("shared_name"))
        default = node.inputs[2]
        if keys_type is None or values_type is None or contents is None or not default.is_const():
            LookupTableFind.version_8(ctx, node, initialized_tables=initialized_tables, **kwargs)
            return
        keys, values = contents
        attrs = {
            f"keys_{keys_type}": keys.tolist(),
            f"values_{values_type}": values.tolist(),
            f"default_{values_type[:-1]}": default.get_tensor_value(),
        }
        outputs, shape, dtype = (
            node.output,
            ctx.get_shape(node.input[1]),
            ctx.get_dtype(node.output[0]),
        )
        ctx.remove_node(node.name)
        ctx.make_node(
            "LabelEncoder",
            [node.input[1]],
            attr=attrs,
            outputs=outputs,
            shapes=[shape],
            dtypes=[dtype],
            domain=constants.AI_ONNX_ML_DOMAIN,
            name=node.name,
        )
        if not ctx.find_output_consumers(table.output[0]):
            ctx.remove_node(table.name)


class _WhitespaceSplit:
    """tf2onnx's StringSplitV2, with TensorFlow's meaning of no separator: runs of
    whitespace (``absl::ascii_isspace``), leading and trailing ones dropped."""

    @classmethod
    def version_1(cls, ctx: Any, node: Any, **kwargs: Any) -> None:
        import numpy as np
        from tf2onnx.custom_opsets.string_ops import StringOps

        separator = node.inputs[1]
        value = separator.get_tensor_value(as_list=False) if separator.is_const() else None
        text = value.reshape(-1)[0] if value is not None and value.size == 1 else None
        if isinstance(text, (bytes, str)) and len(text) > 1:
            raise ValueError(  # tf2onnx reports it as this node's failure
                f"separator {text!r}: onnxruntime-extensions' StringSplit splits at each of its "
                "characters, TensorFlow at the whole string"
            )
        if text not in (b"", ""):
            StringOps.version_1(ctx, node, **kwargs)
            return
        whitespace = _const(ctx, node, np.array([" \t\n\v\f\r"], object), None, "whitespace")
        skip_empty = _const(ctx, node, np.array([True]), None, "skip_empty")
        node.type, node.domain = "StringSplit", "ai.onnx.contrib"
        for attr in list(node.attr):
            del node.attr[attr]
        ctx.replace_inputs(node, [node.input[0], whitespace, skip_empty])


class _RFFT:
    """tf2onnx's RFFT, with Real and Imag readers besides ComplexAbs (its check allows only
    that one, so they pass it under that name, and get theirs back)."""

    @classmethod
    def version_13(cls, ctx: Any, node: Any, **kwargs: Any) -> None:
        from tf2onnx.onnx_opset.signal import RFFTOp

        parts = [c for c in ctx.find_output_consumers(node.output[0]) if c.type in _PARTS]
        types = [c.type for c in parts]
        for consumer in parts:
            consumer.type = "ComplexAbs"
        try:
            RFFTOp.version_13(ctx, node, **kwargs)
        finally:
            for consumer, kind in zip(parts, types, strict=True):
                consumer.type = kind


class _Part:
    """Real or Imag of what tf2onnx's RFFT wrote: [real, imaginary] on the leading axis."""

    index = 0

    @classmethod
    def version_13(cls, ctx: Any, node: Any, **kwargs: Any) -> None:
        _become(ctx, node, "Gather", [node.input[0], _const(ctx, node, cls.index, None, "part")])
        for attr in list(node.attr):
            del node.attr[attr]
        node.set_attr("axis", 0)


class _Real(_Part):
    index = 0


class _Imag(_Part):
    index = 1


_PARTS = ("Real", "Imag")


class _StringEqual:
    """tf2onnx's string Equal (onnxruntime-extensions' StringEqual), less the comparison with
    one constant string: ``CategoryMapper(cats=[that string] -> 1, else 0) != 0``."""

    @classmethod
    def version_1(cls, ctx: Any, node: Any, **kwargs: Any) -> None:
        import onnx
        from tf2onnx import constants
        from tf2onnx.custom_opsets.string_ops import StringEqual

        constant = next(
            (
                i
                for i, n in enumerate(node.inputs)
                if n.is_const() and n.get_tensor_value(False).size == 1
            ),
            None,
        )
        if ctx.get_dtype(node.input[0]) != onnx.TensorProto.STRING or constant is None:
            StringEqual.version_1(ctx, node, **kwargs)
            return
        word = node.inputs[constant].get_tensor_value(as_list=False).reshape(-1)[0]
        text = word.decode() if isinstance(word, bytes) else str(word)
        other = node.input[1 - constant]
        flags = ctx.make_node(
            "CategoryMapper",
            [other],
            attr={"cats_strings": [text], "cats_int64s": [1], "default_int64": 0},
            domain=constants.AI_ONNX_ML_DOMAIN,
            shapes=[ctx.get_shape(other)],
            dtypes=[onnx.TensorProto.INT64],
        ).output[0]
        keep = node.type == "Equal"
        _become(
            ctx,
            node,
            "Cast" if keep else "Equal",
            [flags] if keep else [flags, _const(ctx, node, 0, None, "zero")],
        )
        if keep:
            node.set_attr("to", onnx.TensorProto.BOOL)
        node.domain = ""


HANDLERS: dict[str, type] = {
    "Erfc": _Erfc,
    "Expm1": _Expm1,
    "Log1p": _Log1p,
    "Bucketize": _Bucketize,
    "Xlogy": _Xlogy,
    "Xdivy": _Xdivy,
    "MulNoNan": _MulNoNan,
    "LookupTableFindV2": _NumberLookup,
    "Real": _Real,
    "Imag": _Imag,
}
"""TensorFlow op -> its handler (a class with ``version_N`` methods, as tf2onnx's are)."""
