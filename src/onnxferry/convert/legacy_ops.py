"""The operator versions of ONNX's first opsets that onnx's reference implementation lacks,
so that a model from 2017-2018 (opset 1-6: the model zoo's MNIST and SqueezeNet, PyTorch 0.x
and Caffe2 exports) can be run by it, as ``convert``'s reference for the same model raised to
an opset ONNX Runtime loads.

    ReferenceEvaluator(proto, new_ops=legacy_ops(opset, ops))  # ops: the op types it uses

Each class is named as its operator (the reference evaluator keys ``new_ops`` by class name)
and reads its attributes with the schema of its version. They compute what the newer versions
compute, which is what onnx's version converter turns them into: Reshape's ``shape``
attribute as Reshape-5's input, Split's ``split`` input or attribute, Gemm-1 as the sixth,
Clip-1's bounds, BatchNormalization-1 in inference (per channel or per activation), Dropout
(1 and 6) as inference does (the data through, a mask of ones), whatever its ``is_test``, and
the binary operators' old ``broadcast``/``axis`` attributes as the converter rewrites them.
Softmax, LogSoftmax and Hardmax before 13 work on the input flattened at ``axis`` (1 by
default), where the reference only has 13's one-axis meaning. Other operators it runs at
every opset but with the newest schema's attribute defaults (GRU-1, Selu-1, LpPool-1) get
their own version's defaults.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from onnx.defs import get_schema
from onnx.reference.op_run import OpRun
from onnx.reference.ops.op_gemm import Gemm_6


class Dropout(OpRun):
    """Dropout-1 and -6 (attributes ``is_test``, ``ratio``)."""

    op_domain = ""
    op_schema = get_schema("Dropout", 6, "")

    def _run(
        self, data: np.ndarray, is_test: Any = None, ratio: Any = None, consumed_inputs: Any = None
    ) -> tuple[Any, ...]:
        return (data, np.ones(data.shape, data.dtype))[: len(self.onnx_node.output)]


class Reshape(OpRun):
    """Reshape-1: the new shape in the ``shape`` attribute (0 keeps a dim, -1 is inferred)."""

    op_domain = ""
    op_schema = get_schema("Reshape", 1, "")

    def _run(
        self, data: np.ndarray, shape: Any = None, consumed_inputs: Any = None
    ) -> tuple[np.ndarray]:
        dims = [data.shape[i] if d == 0 else int(d) for i, d in enumerate(shape or ())]
        return (data.reshape(dims),)


class Split(OpRun):
    """Split-1: the sizes in a second input or the ``split`` attribute, else equal parts."""

    op_domain = ""
    op_schema = get_schema("Split", 1, "")

    def _run(
        self, mat: np.ndarray, sizes: np.ndarray | None = None, axis: Any = None, split: Any = None
    ) -> tuple[np.ndarray, ...]:
        given = [int(s) for s in sizes] if sizes is not None else list(split or ())
        parts = len(self.onnx_node.output)
        at = np.cumsum(given)[:-1] if given else parts
        return tuple(np.split(mat, at, axis=axis or 0))


class Gemm(Gemm_6):
    """Gemm-1, computed as Gemm-6."""

    op_domain = ""
    op_schema = get_schema("Gemm", 1, "")


class Clip(OpRun):
    """Clip-1: the bounds in the ``min`` and ``max`` attributes."""

    op_domain = ""
    op_schema = get_schema("Clip", 1, "")

    def _run(
        self, data: np.ndarray, min: Any = None, max: Any = None, consumed_inputs: Any = None
    ) -> tuple[np.ndarray]:
        low = -np.inf if min is None else min
        high = np.inf if max is None else max
        return (np.clip(data, low, high).astype(data.dtype),)


class BatchNormalization(OpRun):
    """BatchNormalization-1 in inference: per channel (``spatial``, the default) or per
    activation, with the running mean and variance."""

    op_domain = ""
    op_schema = get_schema("BatchNormalization", 1, "")

    def _run(
        self,
        x: np.ndarray,
        scale: np.ndarray,
        bias: np.ndarray,
        mean: np.ndarray,
        var: np.ndarray,
        epsilon: Any = None,
        is_test: Any = None,
        momentum: Any = None,
        spatial: Any = None,
        consumed_inputs: Any = None,
    ) -> tuple[np.ndarray]:
        trailing = (1,) * (x.ndim - 2) if spatial is None or spatial else ()
        shape = (1, -1, *trailing) if trailing or x.ndim == 2 else (1, *scale.shape)
        eps = 1e-5 if epsilon is None else epsilon
        s, b, m, v = (t.reshape(shape) for t in (scale, bias, mean, var))
        return (((x - m) / np.sqrt(v + eps) * s + b).astype(x.dtype),)


class _Broadcasting(OpRun):
    """A binary operator of opsets 1-6: with ``broadcast`` set, B's dims line up with A's
    from ``axis`` on (Caffe2's per-channel bias: A[N, C, H, W] + B[C], axis 1), or from the
    end without ``axis``."""

    op_domain = ""
    _apply: Any = None

    def _run(
        self,
        a: np.ndarray,
        b: np.ndarray,
        broadcast: Any = None,
        axis: Any = None,
        consumed_inputs: Any = None,
    ) -> tuple[np.ndarray]:
        if broadcast and axis is not None and 0 < b.ndim < a.ndim:
            start = axis % a.ndim
            b = b.reshape(b.shape + (1,) * (a.ndim - start - b.ndim))
        result = np.asarray(type(self)._apply(a, b))
        return (result if result.dtype == bool else result.astype(a.dtype),)


def _broadcasting(op: str, apply: Any) -> type[OpRun]:
    cls = type(op, (_Broadcasting,), {"op_schema": get_schema(op, 6, ""), "_apply": apply})
    cls.__doc__ = f"{op}-1 (and -6) with the broadcast and axis attributes."
    return cls


class _Flattened(OpRun):
    """Softmax, LogSoftmax and Hardmax before opset 13: over the input flattened to 2-D at
    ``axis`` (default 1), not along one axis (the reference only has 13's meaning)."""

    op_domain = ""
    _apply: Any = None

    def _run(self, x: np.ndarray, axis: Any = None) -> tuple[np.ndarray]:
        at = (1 if axis is None else int(axis)) % max(x.ndim, 1)
        rows = int(np.prod(x.shape[:at]))
        flat = x.reshape(rows, -1)
        return (np.asarray(type(self)._apply(flat)).reshape(x.shape).astype(x.dtype),)


def _softmax(f: np.ndarray) -> np.ndarray:
    e = np.exp(f - f.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def _log_softmax(f: np.ndarray) -> np.ndarray:
    shifted = f - f.max(axis=1, keepdims=True)
    return np.asarray(shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True)))


def _hardmax(f: np.ndarray) -> np.ndarray:
    out = np.zeros_like(f)
    out[np.arange(f.shape[0]), f.argmax(axis=1)] = 1
    return out


def _flattened(op: str, apply: Any) -> type[OpRun]:
    cls = type(op, (_Flattened,), {"op_schema": get_schema(op, 12, ""), "_apply": apply})
    cls.__doc__ = f"{op}-1 and -11, over the input flattened at axis."
    return cls


_BINARY: dict[str, Any] = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide, "Pow": np.power,
    "And": np.logical_and, "Or": np.logical_or, "Xor": np.logical_xor, "Equal": np.equal,
    "Greater": np.greater, "Less": np.less,
}  # fmt: skip

_FIRST_REFERENCE: dict[type[OpRun], int] = {
    Dropout: 7, Reshape: 5, Split: 2, Gemm: 6, Clip: 6, BatchNormalization: 6,
    **{_broadcasting(op, apply): 7 for op, apply in _BINARY.items()},
    _flattened("Softmax", _softmax): 13, _flattened("LogSoftmax", _log_softmax): 13,
    _flattened("Hardmax", _hardmax): 13,
}  # fmt: skip
"""Each class, and the first ai.onnx opset from which onnx's reference runs the operator as
written (the binary operators run before 7, but without the ``axis`` of their broadcast;
Softmax and its kin before 13, but along one axis)."""


def legacy_ops(opset: int, op_types: Iterable[str] = ()) -> list[type[OpRun]]:
    """The classes a model of ai.onnx ``opset`` using ``op_types`` needs beside onnx's
    reference operators: the versions it lacks, and those whose attribute defaults it would
    take from the newest schema (``_with_own_defaults``)."""
    ours = [cls for cls, first in _FIRST_REFERENCE.items() if opset < first]
    mine = {cls.__name__ for cls in ours}
    return ours + [
        fixed
        for op in sorted(set(op_types) - mine)
        if (fixed := _with_own_defaults(op, opset)) is not None
    ]


def _with_own_defaults(op: str, opset: int) -> type[OpRun] | None:
    """onnx's reference class for ``op`` at ``opset`` reading its attributes' defaults from
    that version's schema, where they differ from the newest one's; None where they agree.
    The reference takes defaults from the newest schema (Selu-1's alpha and gamma were
    other numbers)."""
    from onnx.defs import SchemaError
    from onnx.reference.ops import load_op

    try:
        schema, newest = get_schema(op, opset, ""), get_schema(op, "")
    except SchemaError:
        return None
    if schema.since_version == newest.since_version or _defaults(schema) == _defaults(newest):
        return None
    try:
        base = load_op("", op, opset)
    except Exception:  # the reference has no such version: it says so when it loads the model
        return None
    return type(op, (base,), {"op_domain": "", "op_schema": schema})


def _defaults(schema: Any) -> dict[str, bytes]:
    return {
        name: attr.default_value.SerializeToString()
        for name, attr in schema.attributes.items()
        if attr.default_value.type
    }
