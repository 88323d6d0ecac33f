"""Inputs whose values the graph bounds: the values a generated feed may take.

    index_ranges(model.proto, model.signature)         # {"input_ids": (0, 30522)}
    input_vocabularies(model.proto, model.signature)   # {"text": Vocabulary(("good", ...))}

Generated ids are drawn inside these ranges, and generated strings and categories from these
vocabularies (``values.realistic_feeds``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..model import iter_graphs, iter_nodes
from ..signature import Signature
from .values import Vocabulary

if TYPE_CHECKING:
    import onnx

_PASS_THROUGH = {"Cast", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Identity", "Clip"}
"""Ops a category input may go through on its way to an encoder, keeping its values."""
_KEEPS_VALUES = _PASS_THROUGH | {"Expand", "Tile", "Transpose"}
"""Ops an index input may go through on its way to what bounds it, keeping its values."""

_TEXT_STEPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"} | {
    "StringNormalizer",
    "Tokenizer",
    "StringSplit",
}
"""Ops a text input may go through on its way to a TfIdfVectorizer."""
_CATEGORY_OPS = {
    "LabelEncoder": "keys_strings",
    "CategoryMapper": "cats_strings",
    "OneHotEncoder": "cats_strings",
}
"""ai.onnx.ml ops that map a string category, and the attribute listing the known ones."""
_INT_CATEGORY_OPS = {
    "LabelEncoder": "keys_int64s",
    "CategoryMapper": "cats_int64s",
    "OneHotEncoder": "cats_int64s",
}
"""The same ops' attributes listing known integer categories."""


def index_ranges(proto: onnx.ModelProto, signature: Signature) -> dict[str, tuple[int, int]]:
    """Inputs whose values the graph bounds: input name -> (low, high), high exclusive.

    Follows each integer input, and each float input the graph casts to integers (Keras's
    ``Embedding`` takes float ids), through casts, reshapes and broadcasts to ``Gather``
    nodes whose data is an initializer or a ``Constant`` (0 to that tensor's size along the
    Gather axis), ``OneHot`` nodes (0 to their constant depth), and ``Equal`` with a constant
    range of integers (the one-hot of JAX and TensorFlow, ``x == arange(257)`` for Magika's
    bytes and padding). An index the graph compares with 0 is on its way through a
    negative-index wrap (``where(x < 0, x + n, x)``: Keras 3's ``take``, every Keras
    Embedding): the arithmetic after that comparison, which leaves a non-negative index as it
    is, is followed too. Several bounds: the narrowest.
    (Integer categories, a passenger class 1 to 3, are ``input_vocabularies``.)
    """
    constants = _constants(proto)
    consumers = _consumers(proto)
    ranges: dict[str, tuple[int, int]] = {}
    for spec in signature.inputs:
        if spec.dtype.kind not in ("int", "float"):
            continue
        spans = _spans(spec.name, consumers, constants, depth=0, wrapping=False)
        if spans:
            low, high = max(s[0] for s in spans), min(s[1] for s in spans)
            if low < high:
                ranges[spec.name] = (low, high)
    return ranges


def _consumers(proto: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    """The nodes reading each tensor, in every graph."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in iter_nodes(proto):
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consumers


_WRAP_STEPS = {"Add", "Mul", "Where"}
"""Ops of a negative-index wrap (``where(x < 0, x + n, x)``, or tf2onnx's ``SelectV2`` as
``cast(x < 0) * (x + n) + cast(not x < 0) * x``): a non-negative index comes out as it went in."""


def _spans(
    tensor: str,
    consumers: Mapping[str, list[onnx.NodeProto]],
    constants: Mapping[str, onnx.TensorProto],
    depth: int,
    wrapping: bool,
) -> list[tuple[int, int]]:
    """The (low, high) bounds the nodes reading ``tensor`` (through value-keeping ops, and
    once ``wrapping`` the arithmetic of a negative-index wrap) put on its values."""
    if depth > 12:
        return []
    wrapping = wrapping or _compared_with_zero(tensor, consumers, constants)
    found = []
    for node in consumers.get(tensor, []):
        inputs = list(node.input)
        if node.op_type == "Gather" and len(inputs) > 1 and inputs[1] == tensor:
            dims = tuple(constants[inputs[0]].dims) if inputs[0] in constants else ()
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            if dims and -len(dims) <= axis < len(dims) and dims[axis] > 0:
                found.append((0, int(dims[axis])))
        elif node.op_type == "OneHot" and len(inputs) > 1 and inputs[0] == tensor:
            depth_value = _small_integers(constants.get(inputs[1]))
            if depth_value is not None and depth_value.size == 1 and depth_value[0] > 0:
                found.append((0, int(depth_value[0])))
        elif node.op_type == "Equal" and tensor in inputs:
            other = _small_integers(constants.get(inputs[1 - inputs.index(tensor)]))
            if other is not None and _is_arange(other):
                found.append((int(other.min()), int(other.max()) + 1))
        elif (node.op_type in _KEEPS_VALUES and inputs and inputs[0] == tensor) or (
            wrapping
            and node.op_type in _WRAP_STEPS
            and inputs[node.op_type == "Where" :].count(tensor)
        ):
            for out in node.output:
                found += _spans(out, consumers, constants, depth + 1, wrapping)
    return found


def _wrap_step(node: onnx.NodeProto, tensor: str) -> bool:
    """``node`` is a step of a negative-index wrap that carries ``tensor`` on (for ``Where``,
    as one of the values picked, not the condition)."""
    values = node.input[1:] if node.op_type == "Where" else node.input
    return node.op_type in _WRAP_STEPS and tensor in values


def _compared_with_zero(
    tensor: str,
    consumers: Mapping[str, list[onnx.NodeProto]],
    constants: Mapping[str, onnx.TensorProto],
) -> bool:
    """Whether a ``Less`` / ``Greater`` (or ``...OrEqual``) node compares ``tensor``, or a
    cast of it, with a constant 0: the test of a negative-index wrap."""
    from onnx import numpy_helper

    for node in consumers.get(tensor, []):
        if node.op_type == "Cast":
            if any(_compared_with_zero(out, consumers, constants) for out in node.output):
                return True
        elif node.op_type in ("Less", "LessOrEqual", "Greater", "GreaterOrEqual"):
            other = [constants.get(name) for name in node.input if name != tensor]
            zero = [t for t in other if t is not None and math.prod(t.dims) == 1]
            if len(other) == 1 and zero and float(numpy_helper.to_array(zero[0]).flat[0]) == 0:
                return True
    return False


def _is_arange(values: np.ndarray) -> bool:
    """Three or more consecutive integers, each once: a one-hot's classes (not a pair of
    special token ids an attention mask compares with)."""
    ordered = np.sort(values)
    return ordered.size >= 3 and bool(
        np.array_equal(ordered, np.arange(ordered[0], ordered[-1] + 1))
    )


def _small_integers(tensor: onnx.TensorProto | None) -> np.ndarray | None:
    """An integer constant's values, flat, when it has at most 65536 of them; else None."""
    from onnx import numpy_helper

    if tensor is None or math.prod(tensor.dims) > 65536:
        return None
    values = numpy_helper.to_array(tensor)
    return values.reshape(-1) if values.dtype.kind in "iu" and values.size else None


def _constants(proto: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    """Initializers and Constant node outputs (a ``value`` tensor), by tensor name."""
    found: dict[str, onnx.TensorProto] = {}
    for graph in iter_graphs(proto):
        for t in graph.initializer:
            found[t.name] = t
    for node in iter_nodes(proto):
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.HasField("t"):
                    found[node.output[0]] = attr.t
    return found


def input_vocabularies(proto: onnx.ModelProto, signature: Signature) -> dict[str, Vocabulary]:
    """String and integer inputs the graph knows values for: input name -> Vocabulary.

    A string input that reaches a ``TfIdfVectorizer`` (through reshapes, ``StringNormalizer``,
    ``Tokenizer`` or ``StringSplit``) takes texts of its n-grams, with the normalizer's stop
    words. One that reaches an ai.onnx.ml ``LabelEncoder``, ``CategoryMapper`` or
    ``OneHotEncoder`` (through casts, reshapes and a ``Gather`` or ``ArrayFeatureExtractor``
    that picks a column) takes the categories it knows, column by column where each column
    has its own encoder (skl2onnx's ``[batch, k]`` inputs): an unknown category is an error
    in a OneHotEncoder, and the default value, not a category, in the others.
    """
    consumers = _consumers(proto)
    found: dict[str, Vocabulary] = {}
    columns = _column_indices(proto)
    for spec in signature.inputs:
        if spec.dtype.kind == "string":
            vocabulary = _string_reader(spec.name, consumers, depth=0, stop_words=())
            if vocabulary is not None and vocabulary.words:
                found[spec.name] = vocabulary
                continue
        if spec.dtype.kind in ("string", "int"):
            known: dict[int | None, tuple[Any, ...]] = {}
            _categories(spec.name, spec.dtype.kind, consumers, columns, None, known, depth=0)
            if known:
                found[spec.name] = _category_vocabulary(known)
    return found


def _string_reader(
    tensor: str,
    consumers: Mapping[str, list[onnx.NodeProto]],
    depth: int,
    stop_words: tuple[str, ...],
) -> Vocabulary | None:
    if depth > 8:
        return None
    from onnx.helper import get_attribute_value

    for node in consumers.get(tensor, []):
        attrs = {a.name: get_attribute_value(a) for a in node.attribute}
        if node.op_type == "TfIdfVectorizer":
            return Vocabulary(_ngrams(attrs), stop_words=stop_words)
        if node.op_type in _TEXT_STEPS and node.input and node.input[0] == tensor:
            dropped = stop_words + tuple(_text(w) for w in attrs.get("stopwords", []))
            for out in node.output[:1]:
                found = _string_reader(out, consumers, depth + 1, dropped)
                if found is not None:
                    return found
    return None


def _categories(
    tensor: str,
    kind: str,
    consumers: Mapping[str, list[onnx.NodeProto]],
    columns: Mapping[str, int],
    column: int | None,
    known: dict[int | None, tuple[Any, ...]],
    depth: int,
) -> None:
    """Adds to ``known`` the categories the encoders reading ``tensor`` know, by the input
    column a ``Gather`` picked on the way (None: every column)."""
    if depth > 8:
        return
    attribute = _CATEGORY_OPS if kind == "string" else _INT_CATEGORY_OPS
    for node in consumers.get(tensor, []):
        if not node.input or node.input[0] != tensor:
            continue
        if node.op_type in attribute and node.domain == "ai.onnx.ml":
            for attr in node.attribute:
                if attr.name == attribute[node.op_type]:
                    values = attr.strings if kind == "string" else attr.ints
                    if values and column not in known:
                        known[column] = tuple(
                            _text(v) if kind == "string" else int(v) for v in values
                        )
        elif _picks_column(node) and column is None and node.input[1] in columns:
            picked = columns[node.input[1]]
            _categories(node.output[0], kind, consumers, columns, picked, known, depth + 1)
        elif node.op_type in _PASS_THROUGH - {"Cast"} or (node.op_type == "Cast" and kind == "int"):
            for out in node.output[:1]:
                _categories(out, kind, consumers, columns, column, known, depth + 1)


def _picks_column(node: onnx.NodeProto) -> bool:
    """A ``Gather`` past axis 0 or an ai.onnx.ml ``ArrayFeatureExtractor`` (the last axis):
    a column taken by the index in its second input."""
    if node.op_type == "ArrayFeatureExtractor" and node.domain == "ai.onnx.ml":
        return len(node.input) > 1
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    return node.op_type == "Gather" and len(node.input) > 1 and axis != 0


def _category_vocabulary(known: Mapping[int | None, tuple[Any, ...]]) -> Vocabulary:
    """Categories by column (None: any column) as one Vocabulary: ``words`` every category,
    ``columns`` each picked column's own."""
    words = tuple(dict.fromkeys(v for values in known.values() for v in values))
    picked = [c for c in known if c is not None]
    columns = tuple(known.get(c, ()) for c in range(max(picked) + 1)) if picked else ()
    return Vocabulary(words, text=False, columns=columns)


def _column_indices(proto: onnx.ModelProto) -> dict[str, int]:
    """Constant tensors that hold one non-negative index (a ``Gather``'s column), by name."""
    from onnx import TensorProto, numpy_helper

    found: dict[str, int] = {}
    for name, tensor in _constants(proto).items():
        if tensor.data_type in (TensorProto.INT64, TensorProto.INT32) and (
            math.prod(tensor.dims) == 1
        ):
            value = int(numpy_helper.to_array(tensor).reshape(-1)[0])
            if value >= 0:
                found[name] = value
    return found


def _ngrams(attrs: Mapping[str, Any]) -> tuple[str, ...]:
    """A TfIdfVectorizer's n-grams as phrases: its pool holds the 1-grams from
    ``ngram_counts[0]``, the 2-grams (two words each) from ``ngram_counts[1]``, and so on."""
    pool = [_text(w) for w in attrs.get("pool_strings", [])]
    starts = [int(c) for c in attrs.get("ngram_counts", [0])]
    phrases: list[str] = []
    for n, start in enumerate(starts, start=1):
        end = starts[n] if n < len(starts) else len(pool)
        phrases += [" ".join(pool[i : i + n]) for i in range(start, end - n + 1, n)]
    return tuple(dict.fromkeys(p for p in phrases if p))


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
