"""Inputs whose values the graph bounds: the values a generated feed may take.

    index_ranges(model.proto, model.signature)         # {"input_ids": (0, 30522)}
    string_vocabularies(model.proto, model.signature)  # {"text": Vocabulary(("good", ...))}

Generated ids are drawn inside these ranges, and generated strings from these vocabularies
(``values.realistic_feeds``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..model import iter_graphs, iter_nodes
from ..signature import Signature
from .values import Vocabulary

if TYPE_CHECKING:
    import onnx

_PASS_THROUGH = {"Cast", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Identity", "Clip"}
"""Ops an index input may go through on its way to a Gather, keeping its values."""

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
    """Integer inputs that index a table: input name -> (0, rows of the smallest table); or
    that are categories: (the smallest, the largest + 1).

    Follows each integer input through casts and reshapes to ``Gather`` nodes whose data is
    an initializer or a ``Constant``; the rows are that tensor's size along the Gather axis.
    Without a Gather, an ai.onnx.ml ``OneHotEncoder``, ``CategoryMapper`` or ``LabelEncoder``
    on the way gives the span of the integer categories it knows (a passenger class 1 to 3).
    """
    tables = _constant_dims(proto)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in iter_nodes(proto):
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    ranges: dict[str, tuple[int, int]] = {}
    for spec in signature.inputs:
        if spec.dtype.kind != "int":
            continue
        rows = _rows(spec.name, consumers, tables, depth=0)
        if rows:
            ranges[spec.name] = (0, min(rows))
        elif known := _int_categories(spec.name, consumers, depth=0):
            ranges[spec.name] = (min(known), max(known) + 1)
    return ranges


def _int_categories(
    tensor: str, consumers: Mapping[str, list[onnx.NodeProto]], depth: int
) -> list[int]:
    """The integer categories an encoder on ``tensor``'s way knows (casts and reshapes
    followed), or none."""
    if depth > 8:
        return []
    for node in consumers.get(tensor, []):
        if node.op_type in _INT_CATEGORY_OPS and node.domain == "ai.onnx.ml":
            for attr in node.attribute:
                if attr.name == _INT_CATEGORY_OPS[node.op_type] and attr.ints:
                    return [int(v) for v in attr.ints]
        elif node.op_type in _PASS_THROUGH and node.input and node.input[0] == tensor:
            for out in node.output:
                if found := _int_categories(out, consumers, depth + 1):
                    return found
    return []


def _rows(
    tensor: str,
    consumers: Mapping[str, list[onnx.NodeProto]],
    tables: Mapping[str, tuple[int, ...]],
    depth: int,
) -> list[int]:
    if depth > 8:
        return []
    found = []
    for node in consumers.get(tensor, []):
        if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == tensor:
            dims = tables.get(node.input[0])
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            if dims and -len(dims) <= axis < len(dims) and dims[axis] > 0:
                found.append(int(dims[axis]))
        elif node.op_type in _PASS_THROUGH and node.input and node.input[0] == tensor:
            for out in node.output:
                found += _rows(out, consumers, tables, depth + 1)
    return found


def _constant_dims(proto: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Shapes of initializers and Constant node outputs, by tensor name."""
    dims: dict[str, tuple[int, ...]] = {}
    for graph in iter_graphs(proto):
        for t in graph.initializer:
            dims[t.name] = tuple(t.dims)
    for node in iter_nodes(proto):
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.HasField("t"):
                    dims[node.output[0]] = tuple(attr.t.dims)
    return dims


def string_vocabularies(proto: onnx.ModelProto, signature: Signature) -> dict[str, Vocabulary]:
    """String inputs the graph knows words for: input name -> Vocabulary.

    An input that reaches a ``TfIdfVectorizer`` (through reshapes, ``StringNormalizer``,
    ``Tokenizer`` or ``StringSplit``) takes texts of its n-grams, with the normalizer's stop
    words; one that reaches an ai.onnx.ml ``LabelEncoder``, ``CategoryMapper`` or
    ``OneHotEncoder`` directly takes the categories it knows.
    """
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in iter_nodes(proto):
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found: dict[str, Vocabulary] = {}
    for spec in signature.inputs:
        if spec.dtype.kind != "string":
            continue
        vocabulary = _string_reader(spec.name, consumers, depth=0, stop_words=())
        if vocabulary is not None and vocabulary.words:
            found[spec.name] = vocabulary
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
        if node.op_type in _CATEGORY_OPS and depth == 0:
            words = attrs.get(_CATEGORY_OPS[node.op_type], [])
            return Vocabulary(tuple(_text(w) for w in words), text=False)
        if node.op_type in _TEXT_STEPS and node.input and node.input[0] == tensor:
            dropped = stop_words + tuple(_text(w) for w in attrs.get("stopwords", []))
            for out in node.output[:1]:
                found = _string_reader(out, consumers, depth + 1, dropped)
                if found is not None:
                    return found
    return None


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
