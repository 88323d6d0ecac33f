"""Tensor specs and model signatures: names, dtypes (ONNX, numpy, KServe V2) and shapes.

    sig = model.signature
    sig.validate(feeds)                             # FeedError naming the tensor if off
    sig.inputs[0].v2_datatype                       # "FP32"
    sig.resolve_shape(sig.inputs[0], {"batch": 4})  # (4, 3, 224, 224)

Feeds are made (and given feed sets checked) by ``onnxferry.feeds``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import FeedError
from .indexing import IndexLink, index_links

if TYPE_CHECKING:
    import onnx

Dim = int | str | None
"""A dimension: a fixed size, a symbolic name ("batch"), or None when unknown."""

_BATCH_NAME = re.compile(r"(?i)batch|^(n|b|bs)$")
"""Dim names that say "the batch" (``batch``, ``batch_size``, ``N``)."""
_EXPRESSION = re.compile(r"[*+/()]|\s-\s")
"""A dim written as an expression of others (torch's ``batch*chars``, ``2*s0``, ``s0 - 1``)."""

_PLACEHOLDER = re.compile(
    r"""
    (?: | \? | None | -?\d+                   # "", "?", "None", "-1" and other numbers
      | unk__\d+ | unk_\d+                      # tf2onnx, onnx shape inference, ORT
      | p2o\.DynamicDimension\.\d+              # Paddle2ONNX
    )
    """,
    re.VERBOSE,
)


def is_placeholder(param: str) -> bool:
    """True when a ``dim_param`` as written means "unknown", not a name shared by other dims.

        is_placeholder("unk__123"), is_placeholder("batch")   # True, False

    Exporters write these for a dim they know nothing about; each one is its own unknown:

    - ``?``: Paddle2ONNX (e.g. PaddleOCR's ``x: [-1, 3, "?", "?"]``), and what Netron shows;
    - ``-1`` and other numbers as text: Paddle2ONNX and hand-edited models;
    - ``None``: Keras/TF converters that format a TensorShape's None as text;
    - ``unk__N``: tf2onnx, ONNX's own shape inference and ONNX Runtime's symbolic shape
      inference, one new N per unknown dim (``unk_N`` in older versions);
    - ``p2o.DynamicDimension.N``: Paddle2ONNX 1.x, one N per dynamic dim;
    - the empty string: the same as a dim with neither value nor param (skl2onnx's
      ``FloatTensorType([None, 4])`` writes that).

    A dim with neither ``dim_value`` nor ``dim_param``, and a negative ``dim_value`` (Paddle's
    ``-1``), are unknown too (see ``TensorSpec.from_value_info``). A real name (``batch``,
    ``sequence``, keras2onnx's ``N``, torch.export's ``s0``) is one symbol wherever it
    appears; the TorchScript exporter's generated names (``input_dynamic_axes_1``) are unique
    per dim, so keeping them as names changes nothing.
    """
    return _PLACEHOLDER.fullmatch(param.strip()) is not None


@dataclass(frozen=True)
class DType:
    """One element type as ONNX, numpy and the KServe V2 protocol spell it."""

    onnx: int  # TensorProto.DataType code
    onnx_name: str
    v2: str | None  # KServe V2 / Open Inference Protocol name, None if the protocol has none
    numpy: np.dtype[Any]

    @property
    def kind(self) -> str:
        """ "float", "int", "bool" or "string": how values of this type are compared."""
        if self.onnx_name == "STRING":
            return "string"
        if self.onnx_name == "BOOL":
            return "bool"
        if self.numpy.kind in "iu":
            return "int"
        return "float"


def _float8(name: str) -> np.dtype[Any]:
    import ml_dtypes

    dtype: np.dtype[Any] = np.dtype(getattr(ml_dtypes, name))
    return dtype


def _build_dtypes() -> list[DType]:
    rows: list[tuple[int, str, str | None, np.dtype[Any]]] = [
        (1, "FLOAT", "FP32", np.dtype(np.float32)),
        (2, "UINT8", "UINT8", np.dtype(np.uint8)),
        (3, "INT8", "INT8", np.dtype(np.int8)),
        (4, "UINT16", "UINT16", np.dtype(np.uint16)),
        (5, "INT16", "INT16", np.dtype(np.int16)),
        (6, "INT32", "INT32", np.dtype(np.int32)),
        (7, "INT64", "INT64", np.dtype(np.int64)),
        (8, "STRING", "BYTES", np.dtype(object)),
        (9, "BOOL", "BOOL", np.dtype(np.bool_)),
        (10, "FLOAT16", "FP16", np.dtype(np.float16)),
        (11, "DOUBLE", "FP64", np.dtype(np.float64)),
        (12, "UINT32", "UINT32", np.dtype(np.uint32)),
        (13, "UINT64", "UINT64", np.dtype(np.uint64)),
        (14, "COMPLEX64", None, np.dtype(np.complex64)),
        (15, "COMPLEX128", None, np.dtype(np.complex128)),
        (16, "BFLOAT16", "BF16", _float8("bfloat16")),
        (17, "FLOAT8E4M3FN", None, _float8("float8_e4m3fn")),
        (18, "FLOAT8E4M3FNUZ", None, _float8("float8_e4m3fnuz")),
        (19, "FLOAT8E5M2", None, _float8("float8_e5m2")),
        (20, "FLOAT8E5M2FNUZ", None, _float8("float8_e5m2fnuz")),
    ]
    return [DType(code, name, v2, dt) for code, name, v2, dt in rows]


DTYPES: tuple[DType, ...] = tuple(_build_dtypes())
_BY_ONNX = {d.onnx: d for d in DTYPES}
_BY_V2 = {d.v2: d for d in DTYPES if d.v2}
_BY_NUMPY = {d.numpy: d for d in DTYPES if d.numpy != np.dtype(object)}


def dtype_from_onnx(code: int) -> DType:
    """DType for a TensorProto.DataType code; FeedError for types onnxferry cannot carry."""
    try:
        return _BY_ONNX[code]
    except KeyError:
        raise FeedError(
            f"ONNX element type {code} is not supported",
            hint="use a standard numeric, bool or string tensor type",
        ) from None


def dtype_from_v2(name: str) -> DType:
    """DType for a KServe V2 datatype name such as "FP32" or "BYTES"."""
    try:
        return _BY_V2[name.upper()]
    except KeyError:
        known = ", ".join(sorted(_BY_V2))
        raise FeedError(f"unknown V2 datatype {name!r}", hint=f"use one of {known}") from None


def dtype_from_numpy(dtype: Any) -> DType:
    """DType for a numpy dtype; str/bytes/object arrays map to STRING, and so does the name
    "string" (a Keras or TensorFlow string tensor's dtype)."""
    if isinstance(dtype, str) and dtype == "string":
        return _BY_ONNX[8]
    dt = np.dtype(dtype)
    if dt.kind in "OUS":
        return _BY_ONNX[8]
    try:
        return _BY_NUMPY[dt]
    except KeyError:
        raise FeedError(f"numpy dtype {dt} has no ONNX equivalent") from None


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor: element type and shape (None for an unknown rank).

    In ``shape`` every unknown dim is None, however the model wrote it (see
    ``is_placeholder``); ``written`` keeps the dims as the model spells them (an int, a
    ``dim_param`` text, or None for a dim with neither), when they differ from ``shape``.
    """

    name: str
    dtype: DType
    shape: tuple[Dim, ...] | None
    written: tuple[Dim, ...] | None = field(default=None, compare=False, repr=False)
    kind: str = "tensor"
    """"tensor"; "optional" for an optional tensor (``dtype`` and ``shape`` are its
    element's, and a tensor feeds it); "sequence", "map", "sparse tensor", "optional
    sequence"... or "opaque" for the types no array stands for (object dtype, unknown shape;
    ``type_text`` spells them)."""
    onnx_type: str | None = field(default=None, compare=False, repr=False)
    """The ONNX type as text for the kinds no array stands for, e.g. "seq(tensor(FLOAT))"."""

    @property
    def is_array(self) -> bool:
        """Whether an array feeds it (a tensor, or an optional tensor)."""
        return self.kind in ("tensor", "optional")

    def not_an_array(self) -> FeedError:
        """The one line for an input no array stands for (``is_array`` false)."""
        return FeedError(
            f"input {self.name!r} is a {self.kind} ({self.type_text}), not a tensor: no array "
            "stands for it, so ferry can neither make nor read inputs for it",
            hint="export the model with tensor inputs (a sequence as one stacked tensor)",
        )

    @property
    def type_text(self) -> str:
        """The element type, e.g. "FLOAT", "optional(FLOAT)", "seq(tensor(FLOAT))"."""
        if self.kind == "optional":
            return f"optional({self.dtype.onnx_name})"
        return self.onnx_type or self.dtype.onnx_name

    @property
    def v2_datatype(self) -> str | None:
        return self.dtype.v2

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    @property
    def is_static(self) -> bool:
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)

    def axis_first(self, axis: int) -> TensorSpec:
        """This spec with ``axis`` moved to the front (the shape a file of rows holds for an
        input whose rows lie on another axis: ``state[2, batch, 128]`` as ``[batch, 2,
        128]``); itself for axis 0 or an unknown rank."""
        shape = self.shape
        if not axis or shape is None:
            return self
        return replace(self, shape=(shape[axis], *shape[:axis], *shape[axis + 1 :]), written=None)

    def shape_text(self) -> str:
        """Shape as text, e.g. "[batch, 3, 224, 224]"; "?" for unknown dims or rank."""
        if self.shape is None:
            return "?"
        return "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"

    def fits(self, shape: Sequence[int], sizes: Mapping[str, int] | None = None) -> bool:
        """Whether an array of ``shape`` fits this spec: no shape declared, or the same rank,
        the fixed dims equal and each named dim at its size in ``sizes`` (when there).

            TensorSpec("y", dtype_from_onnx(1), (1, "seqlen")).fits((28, 1, 8210))  # False
        """
        if self.shape is None:
            return True
        if len(self.shape) != len(shape):
            return False
        sizes = sizes or {}
        return all(
            dim == have if isinstance(dim, int) else sizes.get(dim, have) == have
            for dim, have in zip(self.shape, shape, strict=True)
            if dim is not None
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.type_text,
            "kind": self.kind,
            "v2_datatype": self.dtype.v2,
            "numpy_dtype": str(self.dtype.numpy),
            "shape": None if self.shape is None else list(self.shape),
            "shape_as_written": list(self.as_written) if self.as_written is not None else None,
        }

    @property
    def as_written(self) -> tuple[Dim, ...] | None:
        """The dims as the model spells them (``shape`` when nothing was normalized)."""
        return self.written if self.written is not None else self.shape

    @classmethod
    def from_value_info(cls, info: onnx.ValueInfoProto) -> TensorSpec:
        """Spec from a graph input/output; an optional tensor as its element (kind
        "optional"); other non-tensor types (sequences, maps) get object dtype, unknown shape
        and their kind."""
        name = proto_text(info.name)
        which = info.type.WhichOneof("value")
        kind = "tensor"
        tensor_type = info.type.tensor_type if which == "tensor_type" else None
        if which == "optional_type":
            element = info.type.optional_type.elem_type
            if element.WhichOneof("value") == "tensor_type":
                kind, tensor_type = "optional", element.tensor_type
        if tensor_type is None:
            kind = _KINDS.get(which or "", "opaque")
            if which == "optional_type":  # of a sequence, a map...
                inner = info.type.optional_type.elem_type.WhichOneof("value") or ""
                kind = f"optional {_KINDS.get(inner, 'opaque')}"
            return cls(name, _OBJECT, None, kind=kind, onnx_type=type_text(info.type))
        dtype = _BY_ONNX.get(tensor_type.elem_type, _OBJECT)
        if not tensor_type.HasField("shape"):
            return cls(name, dtype, None, kind=kind)
        written: list[Dim] = []
        for d in tensor_type.shape.dim:
            if d.HasField("dim_value"):
                written.append(int(d.dim_value))
            elif d.HasField("dim_param"):
                written.append(proto_text(d.dim_param))
            else:
                written.append(None)
        shape = tuple(_normalized(d) for d in written)
        kept = None if shape == tuple(written) else tuple(written)
        return cls(name, dtype, shape, kept, kind=kind)


_KINDS = {
    "sequence_type": "sequence",
    "map_type": "map",
    "optional_type": "optional",
    "sparse_tensor_type": "sparse tensor",
}


def type_text(t: onnx.TypeProto) -> str:
    """An ONNX type as text: "FLOAT", "seq(tensor(FLOAT))", "map(STRING, FLOAT)"..."""
    which = t.WhichOneof("value")
    if which in ("tensor_type", "sparse_tensor_type"):
        elem = _BY_ONNX.get(getattr(t, which).elem_type, _OBJECT).onnx_name
        return f"tensor({elem})" if which == "tensor_type" else f"sparse_tensor({elem})"
    if which == "sequence_type":
        return f"seq({type_text(t.sequence_type.elem_type)})"
    if which == "optional_type":
        return f"optional({type_text(t.optional_type.elem_type)})"
    if which == "map_type":
        key = _BY_ONNX.get(t.map_type.key_type, _OBJECT).onnx_name
        return f"map({key}, {type_text(t.map_type.value_type)})"
    return which or "unknown"


def proto_text(value: object) -> str:
    """A protobuf string field as text: a damaged file can hold bytes that are not UTF-8,
    which protobuf then hands over as ``bytes``; they are decoded with replacement."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _normalized(dim: Dim) -> Dim:
    """None for every spelling of "unknown"; a fixed size or a real symbol name as it is."""
    if isinstance(dim, int):
        return dim if dim >= 0 else None
    if dim is None or is_placeholder(dim):
        return None
    return dim


_OBJECT = DType(0, "UNDEFINED", None, np.dtype(object))


@dataclass(frozen=True)
class Signature:
    """Ordered input and output specs of a model; ``links``: inputs whose values index an
    axis of another (a graph network's edges and its nodes: ``indexing``)."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    links: tuple[IndexLink, ...] = ()

    @classmethod
    def from_onnx(cls, model: onnx.ModelProto) -> Signature:
        """Signature of a model's main graph; initializers listed as inputs are not inputs."""
        graph = model.graph
        initializers = {t.name for t in graph.initializer}
        inputs = tuple(
            TensorSpec.from_value_info(v) for v in graph.input if v.name not in initializers
        )
        outputs = tuple(TensorSpec.from_value_info(v) for v in graph.output)
        return cls(inputs, outputs, index_links(model))

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.outputs]

    def input(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise FeedError(f"model has no input {name!r}", hint=f"inputs are {self.input_names}")

    def row_axes(self) -> dict[str, int | None]:
        """Per input, the axis its rows (the batch) lie along, or None for an input that is
        one value for every row.

            Signature.from_onnx(vad).row_axes()   # {"input": 0, "state": 1, "sr": None}

        The axis named as the inputs' batch dim, wherever it stands (a recurrent
        ``state: [2, "batch", 128]`` beside ``input: ["batch", 512]``); else a leading open dim
        (an input of unknown rank too). Fixed leading dims and scalars hold no rows, except
        that a lone unnamed dim among fixed ones (``state: [2, ?, 128]``, as an exporter that
        names no dims writes a recurrent state) is the batch when other inputs' rows lead. Rows
        that another input's values index (a graph's nodes, ``links``) are no batch: none then.
        """
        batch = self.batch_symbol()
        axes: dict[str, int | None] = {}
        for spec in self.inputs:
            shape = spec.shape
            if shape is None:
                axes[spec.name] = 0
            elif batch is not None and batch in shape:
                axes[spec.name] = shape.index(batch)
            else:
                axes[spec.name] = 0 if shape and not isinstance(shape[0], int) else None
        if any(axis == 0 for axis in axes.values()):
            for spec in self.inputs:
                if axes[spec.name] is None and _lone_unnamed_dim(spec.shape):
                    axes[spec.name] = (spec.shape or ()).index(None)
        indexed = self.indexed_axes()
        if any((name, axis) in indexed for name, axis in axes.items()):
            return dict.fromkeys(axes)  # rows another input's values point into: no batch
        return axes

    def indexed_axes(self) -> set[tuple[str, int]]:
        """(input, axis) of each axis another input's values index (a graph's nodes)."""
        return {(link.data, link.axis) for link in self.links}

    def batch_symbol(self) -> str | None:
        """The dim name most inputs lead with (their batch), or None; where that name says
        nothing of a batch and another dim's does, that one: a time-major recurrent model
        (PyTorch's LSTM without ``batch_first``) takes ``x[seq_len, batch_size, 8]``, and its
        rows are along ``batch_size``, not time."""
        indexed = self.indexed_axes()
        leading = [
            s.shape[0]
            for s in self.inputs
            if s.shape and isinstance(s.shape[0], str) and (s.name, 0) not in indexed
        ]
        if not leading:
            return None
        first = max(set(leading), key=leading.count)
        inner = [d for s in self.inputs for d in (s.shape or ())[1:] if isinstance(d, str)]
        return next((d for d in [first, *leading, *inner] if _BATCH_NAME.search(d)), first)

    def merged_row_outputs(self) -> list[str]:
        """Outputs whose declared shape folds the rows into another axis: none of its dims is
        the inputs' batch, but one is an expression of it (torch's ``view(-1)`` of a
        ``[batch, chars]`` tensor writes ``[batch*chars]``). A batch's value cannot be split
        into rows: such a model runs a row at a time.

            Signature.from_onnx(segmenter).merged_row_outputs()   # ["output_0"]
        """
        batch = self.batch_symbol()
        if batch is None:
            return []
        named = re.compile(rf"(?<![\w.]){re.escape(batch)}(?![\w.])")
        return [
            spec.name
            for spec in self.outputs
            if spec.shape is not None
            and batch not in spec.shape
            and any(
                isinstance(d, str) and _EXPRESSION.search(d) and named.search(d) for d in spec.shape
            )
        ]

    def output_row_axis(self, name: str, shape: Sequence[int]) -> int:
        """The axis an output of ``shape`` (as a run gave it) holds its rows along: where its
        declared shape names the inputs' batch dim; else, when it fits an input whose rows lie
        on another axis (a recurrent state out, as in: ``stateN`` like ``state[2, ?, 128]``),
        that axis; else the first.

            Signature.from_onnx(vad).output_row_axis("stateN", (2, 4, 128))   # 1
        """
        spec = next(o for o in self.outputs if o.name == name)
        batch = self.batch_symbol()
        if batch is not None and spec.shape is not None and batch in spec.shape:
            return spec.shape.index(batch)
        axes = self.row_axes()
        for given in self.inputs:
            axis = axes[given.name]
            if axis and given.shape is not None and given.fits(shape):
                return axis
        return 0

    def to_dict(self) -> dict[str, Any]:
        """Inputs and outputs; ``links`` too where there are some."""
        links = [{"index": k.index, "data": k.data, "axis": k.axis} for k in self.links]
        return {
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
            **({"links": links} if links else {}),
        }

    def dims_following_inputs(
        self, feeds: Sequence[Mapping[str, Any]], outputs: Sequence[Mapping[str, Any]]
    ) -> dict[str, dict[int, str]]:
        """The output dims left unknown that follow a named input dim, seen over runs: output
        name -> {axis: the input dim's name}. A dim counts when its size in every run's
        ``outputs`` equals that name's size in the run's ``feeds``, takes more than one size
        over the runs, and matches no other name (tf2onnx's ``unk__N`` for a sequence axis).

            sig.dims_following_inputs([{"x": a1}, {"x": a4}], [out1, out4])  # {"y": {1: "seq"}}
        """
        sizes: dict[str, list[int]] = {}
        for spec in self.inputs:
            for axis, dim in enumerate(spec.shape or ()):
                if isinstance(dim, str) and not _EXPRESSION.search(dim):
                    seen = [np.shape(f[spec.name])[axis:][:1] for f in feeds if spec.name in f]
                    if len(seen) == len(feeds) and all(seen):
                        sizes.setdefault(dim, [int(s[0]) for s in seen])
        named: dict[str, dict[int, str]] = {}
        for spec in self.outputs:
            for axis, dim in enumerate(spec.shape or ()):
                values = [o.get(spec.name) for o in outputs]
                arrays = [v for v in values if isinstance(v, np.ndarray)]
                if dim is not None or len(arrays) != len(values):
                    continue
                got = [v.shape[axis] if v.ndim == len(spec.shape or ()) else -1 for v in arrays]
                if -1 in got or len(set(got)) < 2:
                    continue
                matches = [name for name, want in sizes.items() if want == got]
                if len(matches) == 1:
                    named.setdefault(spec.name, {})[axis] = matches[0]
        return named

    def validate(self, feeds: Mapping[str, Any]) -> None:
        """Raise FeedError naming the first tensor whose name, dtype or shape is wrong.

        A symbolic dimension must have the same size in every input that names it.
        """
        unknown = [name for name in feeds if name not in self.input_names]
        if unknown:
            raise FeedError(
                f"unknown input {unknown[0]!r}", hint=f"the model's inputs are {self.input_names}"
            )
        missing = [name for name in self.input_names if name not in feeds]
        if missing:
            raise FeedError(
                f"missing input {missing[0]!r}",
                hint=f"give every input: {self.input_names}",
            )
        bound: dict[str, tuple[int, str]] = {}
        for spec in self.inputs:
            _validate_one(spec, feeds[spec.name], bound)

    def resolve_shape(
        self, spec: TensorSpec, dims: Mapping[str, int] | None = None, default: int = 1
    ) -> tuple[int, ...]:
        """Concrete shape for a spec: symbolic dims from ``dims`` (by name), else ``default``.

        ``dims`` may also name an input ("input_ids": ...) to give its whole leading dim.
        """
        dims = dims or {}
        if spec.shape is None:
            raise FeedError(
                f"input {spec.name!r} has an unknown rank",
                hint="give sample inputs instead (--inputs feeds.npz)",
            )
        return tuple(
            d if isinstance(d, int) else int(dims.get(d, default) if d else default)
            for d in spec.shape
        )


def _validate_one(spec: TensorSpec, value: Any, bound: dict[str, tuple[int, str]]) -> None:
    if not spec.is_array:
        raise spec.not_an_array()
    if not isinstance(value, np.ndarray):
        raise FeedError(
            f"input {spec.name!r} is a {type(value).__name__}, not a numpy array",
            hint="pass numpy arrays",
        )
    got = dtype_from_numpy(value.dtype) if value.dtype.kind in "OUS" else None
    if spec.dtype.kind == "string":
        if got is None:
            raise FeedError(
                f"input {spec.name!r} expects strings, got {value.dtype}",
                hint="pass a numpy array of str or bytes",
            )
    elif spec.dtype.onnx and value.dtype != spec.dtype.numpy:
        raise FeedError(
            f"input {spec.name!r} expects dtype {spec.dtype.numpy} ({spec.dtype.onnx_name}), "
            f"got {value.dtype}",
            hint=f"cast it with .astype(np.{spec.dtype.numpy})",
        )
    if spec.shape is None:
        return
    if value.ndim != len(spec.shape):
        raise FeedError(
            f"input {spec.name!r} expects rank {len(spec.shape)} {spec.shape_text()}, "
            f"got rank {value.ndim} {list(value.shape)}",
            hint="reshape the input to the model's rank",
        )
    for axis, (want, have) in enumerate(zip(spec.shape, value.shape, strict=True)):
        if isinstance(want, int) and want != have:
            raise FeedError(
                f"input {spec.name!r} expects shape {spec.shape_text()}, got {list(value.shape)} "
                f"(dim {axis} must be {want})",
                hint="resize or pad the input to the model's shape",
            )
        if isinstance(want, str) and want:
            first = bound.setdefault(want, (have, spec.name))
            if first[0] != have:
                raise FeedError(
                    f"input {spec.name!r} has {want}={have} at dim {axis}, but input "
                    f"{first[1]!r} has {want}={first[0]}",
                    hint=f"every input must agree on the size of {want!r}",
                )


def element_count(shape: Iterable[int]) -> int:
    """Product of a shape's dims (1 for a scalar)."""
    return math.prod(shape)


def _lone_unnamed_dim(shape: tuple[int | str | None, ...] | None) -> bool:
    """One dim with neither a size nor a name, every other fixed: ``[2, ?, 128]``."""
    return (
        shape is not None and shape.count(None) == 1 and not any(isinstance(d, str) for d in shape)
    )
