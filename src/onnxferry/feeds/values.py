"""Generated values: what every generated feed set holds, whatever its sizes.

    shapes = {"input_ids": (4, 16), "attention_mask": (4, 16)}
    feeds = realistic_feeds(signature, shapes=shapes, value_ranges={"input_ids": (0, 30522)})
    feeds = realistic_feeds(signature, vocabularies={"text": Vocabulary(("good", "bad"))})

Random floats are fine for most models, but integer inputs of language models are not: token
ids must lie inside the vocabulary and attention masks must look like real padding (some rows
padded, some not), or a verification passes on inputs no user ever sends. Nor are string
inputs: a text classifier fed "alpha beta" sees no word it knows, and every class agrees.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..signature import DType, Signature, TensorSpec

BATCH_NAMES = frozenset({"batch", "batch_size", "n", "b", "bs", "N", "B"})
"""Dim names treated as the batch axis."""

_SEPARATORS = (" ", " ", " ", ", ", ". ", "! ", "? ", " - ", "'s ", "\n", "  ", "; ")
_WORDS_PER_TEXT = (4, 40)


@dataclass(frozen=True)
class Vocabulary:
    """The values a string or category input takes: ``words`` (a text vectorizer's
    vocabulary, phrases of n-grams included) joined into texts, or with ``text=False`` one
    of ``words`` per element (a category: strings, or integers for an integer input).
    ``columns`` give each column of the last axis its own categories where encoders read the
    columns apart (a table's ``[batch, 3]`` input with one encoder per column); a column past
    them takes ``words``. ``stop_words`` are words the model drops; texts mix them in.

        Vocabulary(("good", "very bad"), stop_words=("the",))   # texts of these
        Vocabulary(("red", "green"), text=False)                 # categories
        Vocabulary((1, 2, 3), text=False, columns=((1, 2, 3), (0, 1)))  # two int columns
    """

    words: tuple[Any, ...]
    text: bool = True
    stop_words: tuple[str, ...] = ()
    columns: tuple[tuple[Any, ...], ...] = ()


@dataclass(frozen=True)
class ColumnScale:
    """Where each column (last axis) of a float input lies in the data a model was fitted
    on: ``center`` and ``spread`` per column (a scaler's mean and scale, a tree ensemble's
    split thresholds), so generated rows land where the model makes its decisions.

        ColumnScale(np.array([10.0, 0.5]), np.array([3.0, 0.1])).rows((4, 2), rng, np.float32)
    """

    center: np.ndarray
    spread: np.ndarray

    def rows(self, shape: tuple[int, ...], rng: np.random.Generator, dtype: Any) -> np.ndarray:
        """Normal values around each column's center, ``shape`` ending in the columns."""
        values = self.center + self.spread * rng.standard_normal(shape)
        return np.asarray(values, dtype=dtype)


def realistic_feeds(
    signature: Signature,
    dims: Mapping[str, int] | None = None,
    seed: int = 0,
    value_ranges: Mapping[str, tuple[int, int]] | None = None,
    *,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    unit_range: Collection[str] = (),
    vocabularies: Mapping[str, Vocabulary] | None = None,
    column_scales: Mapping[str, ColumnScale] | None = None,
) -> dict[str, np.ndarray]:
    """Feeds for every input (at ``shapes`` where given, else symbolic dims from ``dims`` and
    1 for the rest), with language-model inputs made realistic:

    - ``*mask*`` inputs: 1 for tokens, 0 for padding; row 0 is never padded, every other row
      from row 1 on loses a random tail;
    - ids (``value_ranges`` or ``*ids*`` names): integers in range (else in [0, 8)), 0 (the
      usual pad id) where the mask pads; a float input with a value range (the float ids
      Keras's Embedding casts) takes whole numbers in it;
    - an input whose values index another's axis (a graph's edges its nodes,
      ``Signature.links``): integers below that axis' size;
    - ``*token_type*`` / ``*segment*``: 0 for the first part of each row, 1 after;
    - ``*position*`` ids: 0..seq-1;
    - 1-D integer ``*len*`` inputs (``waveforms_lens``): lengths along the other inputs'
      longest axis past the first, the whole of it in row 0, at least half of it elsewhere;
    - floats named in ``unit_range`` (images): uniform in [0, 1);
    - floats with a ``ColumnScale`` (a table model's features): each column normal around
      its center with its spread, as the rows the model was fitted on;
    - strings, or integer categories, with a ``Vocabulary``: texts (or categories) drawn from
      it by ``vocabulary_texts``;
    - 8-bit integers (quantized data, pixels) over their whole range;
    - everything else as ``random_array``: standard normal floats, ints in [0, 8), random
      bools and short strings.
    """
    rng = np.random.default_rng(seed)
    resolved = {
        spec.name: shapes[spec.name] if shapes else signature.resolve_shape(spec, dims)
        for spec in signature.inputs
    }
    ranges = {**_linked_ranges(signature, resolved), **(value_ranges or {})}
    feeds: dict[str, np.ndarray] = {}
    padding = None
    for spec in signature.inputs:
        shape = resolved[spec.name]
        dtype = spec.dtype.numpy
        if _is_mask(spec):
            padding = _padding(shape, rng)
            feeds[spec.name] = padding.astype(spec.dtype.numpy)
        elif spec.name in unit_range and spec.dtype.kind == "float":
            feeds[spec.name] = rng.random(shape, dtype=np.float32).astype(spec.dtype.numpy)
        elif spec.dtype.kind == "float" and spec.name in (column_scales or {}):
            assert column_scales is not None
            feeds[spec.name] = column_scales[spec.name].rows(shape, rng, spec.dtype.numpy)
        elif spec.dtype.kind in ("string", "int") and spec.name in (vocabularies or {}):
            assert vocabularies is not None
            drawn = vocabulary_texts(vocabularies[spec.name], shape, rng)
            feeds[spec.name] = drawn if spec.dtype.kind == "string" else drawn.astype(dtype)
        else:
            feeds[spec.name] = _one(spec, shape, rng, ranges.get(spec.name))
    for spec in signature.inputs:
        if _is_length(spec) and spec.name not in ranges:
            longest = _longest_axis(feeds, spec.name)
            if longest:
                feeds[spec.name] = _lengths(feeds[spec.name].shape, longest, rng, spec)
    if padding is not None:
        for spec in signature.inputs:
            array = feeds[spec.name]
            if _is_ids(spec, ranges) and array.shape == padding.shape:
                feeds[spec.name] = np.where(padding.astype(bool), array, 0).astype(array.dtype)
    # numpy hands back scalars, not arrays, for the shape (); ONNX Runtime wants arrays
    return {name: np.asarray(value, dtype=value.dtype) for name, value in feeds.items()}


def vocabulary_texts(
    vocabulary: Vocabulary, shape: tuple[int, ...], rng: np.random.Generator
) -> np.ndarray:
    """Strings drawn from ``vocabulary`` (or its categories), as an object array of ``shape``.

        vocabulary_texts(Vocabulary(("good", "bad")), (2,), np.random.default_rng(0))

    A category takes one of the known values per element, column by column where
    ``vocabulary.columns`` tells them apart.

    A text holds 4 to 40 pieces, each in about seven of ten a vocabulary entry (its unusual
    ones, non-ASCII or with digits or marks, picked one time in seven), else a stop word or a
    made-up word the vocabulary lacks; some Capitalised or UPPER-CASE, joined by spaces and
    punctuation. The last element of a batch of more than one is the empty text.
    """
    out = np.empty(shape, dtype=object)
    words = vocabulary.words or ("",)
    if not vocabulary.text:
        apart = len(shape) >= 2 and bool(vocabulary.columns)
        for column in range(shape[-1] if apart else 1):
            known = vocabulary.columns[column] if column < len(vocabulary.columns) else ()
            view = out[..., column] if apart else out
            choices = np.asarray(known or words, dtype=object)
            view[...] = choices[rng.integers(0, len(choices), size=view.shape)]
        return out
    unusual = [
        group
        for group in (
            [w for w in words if not w.isascii()],
            [w for w in words if w.isascii() and not w.replace(" ", "").isalpha()],
        )
        if group
    ]
    texts = [_text(words, unusual, vocabulary.stop_words, rng) for _ in range(out.size)]
    if len(texts) > 1:
        texts[-1] = ""
    out.flat[:] = texts
    return out


def _text(
    words: tuple[str, ...],
    unusual: list[list[str]],
    stop_words: tuple[str, ...],
    rng: np.random.Generator,
) -> str:
    pieces = []
    for _ in range(int(rng.integers(*_WORDS_PER_TEXT))):
        pick = rng.random()
        if pick < 0.15 and unusual:
            group = unusual[int(rng.integers(len(unusual)))]
            word = group[int(rng.integers(len(group)))]
        elif pick < 0.3 and stop_words:
            word = stop_words[int(rng.integers(len(stop_words)))]
        elif pick < 0.4:
            word = "".join(rng.choice(list("bcdfghjklmnpqrstvwxz"), size=int(rng.integers(1, 9))))
        else:
            word = words[int(rng.integers(len(words)))]
        case = rng.random()
        word = word.upper() if case < 0.1 else word.capitalize() if case < 0.25 else word
        pieces.append(word + str(rng.choice(_SEPARATORS)))
    return "".join(pieces).rstrip()


def random_array(dtype: DType, shape: Iterable[int], rng: np.random.Generator) -> np.ndarray:
    """Random values of one dtype and shape (ints in [0, 8) so they index safely); an array
    even for the scalar shape ()."""
    return np.asarray(_random(dtype, tuple(shape), rng), dtype=dtype.numpy)


def _random(dtype: DType, shape: tuple[int, ...], rng: np.random.Generator) -> Any:
    kind = dtype.kind
    if kind == "string":
        words = np.array(["alpha", "beta", "gamma", "delta", "epsilon", ""], dtype=object)
        return rng.choice(words, size=shape)
    if kind == "bool":
        return rng.random(shape) < 0.5
    if kind == "int":
        return rng.integers(0, 8, size=shape).astype(dtype.numpy)
    if dtype.numpy.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype.numpy)
    return rng.standard_normal(shape).astype(np.float32).astype(dtype.numpy)


def _is_length(spec: TensorSpec) -> bool:
    """A 1-D integer input of lengths (``waveforms_lens``, ``input_lengths``, ``seq_len``)."""
    name = spec.name.lower()
    return spec.dtype.kind == "int" and len(spec.shape or ()) == 1 and "len" in name


def _longest_axis(feeds: Mapping[str, np.ndarray], skip: str) -> int:
    """The longest axis past the first among the other inputs: what lengths count along."""
    sizes = [int(d) for name, a in feeds.items() if name != skip for d in np.shape(a)[1:]]
    return max(sizes, default=0)


def _lengths(
    shape: tuple[int, ...], longest: int, rng: np.random.Generator, spec: TensorSpec
) -> np.ndarray:
    """Row 0 the whole ``longest``, the others between half of it and all of it."""
    values = rng.integers(max(1, longest // 2), longest + 1, size=shape)
    if values.size:
        values.flat[0] = longest
    return values.astype(spec.dtype.numpy)


def _is_mask(spec: TensorSpec) -> bool:
    return "mask" in spec.name.lower() and spec.dtype.kind in ("int", "bool", "float")


def _is_ids(spec: TensorSpec, ranges: Mapping[str, Any]) -> bool:
    name = spec.name.lower()
    return spec.dtype.kind == "int" and (spec.name in ranges or name.endswith("ids"))


def _one(
    spec: TensorSpec, shape: tuple[int, ...], rng: np.random.Generator, span: tuple[int, int] | None
) -> np.ndarray:
    name = spec.name.lower()
    if spec.dtype.kind == "float" and span is not None:  # float ids (Keras's Embedding)
        return rng.integers(span[0], max(span[1], span[0] + 1), size=shape).astype(spec.dtype.numpy)
    if spec.dtype.kind != "int":
        return random_array(spec.dtype, shape, rng)
    if "position" in name and shape:
        return np.broadcast_to(np.arange(shape[-1]), shape).astype(spec.dtype.numpy)
    if ("token_type" in name or "segment" in name) and shape:
        split = rng.integers(1, shape[-1] + 1, size=shape[:-1])[..., None]
        return (np.arange(shape[-1]) >= split).astype(spec.dtype.numpy)
    low, high = span if span is not None else _integers(spec.dtype.numpy)
    return rng.integers(low, max(high, low + 1), size=shape).astype(spec.dtype.numpy)


def _linked_ranges(
    signature: Signature, shapes: Mapping[str, tuple[int, ...]]
) -> dict[str, tuple[int, int]]:
    """Ranges of the inputs whose values index another's axis (a graph's edges: below its
    node count), at the sizes ``shapes`` give; the narrowest where one indexes several."""
    ranges: dict[str, tuple[int, int]] = {}
    for link in signature.links:
        shape = shapes.get(link.data, ())
        if -len(shape) <= link.axis < len(shape) and shape[link.axis] > 0:
            high = min(shape[link.axis], ranges.get(link.index, (0, shape[link.axis]))[1])
            ranges[link.index] = (0, high)
    return ranges


def _integers(dtype: np.dtype[Any]) -> tuple[int, int]:
    """Generated values of an integer input bound by nothing: 8-bit ones are quantized data
    or pixels, over their whole range; wider ones stay in [0, 8), so they index safely."""
    if dtype.itemsize == 1:
        info = np.iinfo(dtype)
        return int(info.min), int(info.max) + 1
    return 0, 8


def _padding(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """1 = token, 0 = padding, along the last axis; rows 1, 3, 5... keep a random prefix."""
    mask = np.ones(shape, dtype=np.int64)
    if len(shape) < 2 or shape[-1] < 2:
        return mask
    rows = mask.reshape(-1, shape[-1])
    for row in range(1, rows.shape[0], 2):
        keep = int(rng.integers(1, shape[-1]))
        rows[row, keep:] = 0
    return rows.reshape(shape)
