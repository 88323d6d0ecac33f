"""Realistic generated inputs: valid token ids, padded attention masks, several shapes.

    for dims in shape_plan(signature):                     # each dynamic dim takes 2 values
        feeds = realistic_feeds(signature, dims, seed=0, value_ranges={"input_ids": (0, 30522)})

Random floats are fine for most models, but integer inputs of language models are not: token
ids must lie inside the vocabulary and attention masks must look like real padding (some rows
padded, some not), or a verification passes on inputs no user ever sends.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from .signature import DType, Signature, TensorSpec, random_array

BATCH_NAMES = frozenset({"batch", "batch_size", "n", "b", "bs", "N", "B"})
"""Dim names treated as the batch axis."""

BATCH_VALUES = (1, 4)
OTHER_VALUES = (8, 13)


def dynamic_dims(signature: Signature) -> list[str]:
    """Distinct symbolic dim names of the inputs, in order of first appearance."""
    names: dict[str, None] = {}
    for spec in signature.inputs:
        for d in spec.shape or ():
            if isinstance(d, str) and d:
                names[d] = None
    return list(names)


def shape_plan(
    signature: Signature, fixed: Mapping[str, int] | None = None
) -> list[dict[str, int]]:
    """Dim assignments giving every dynamic dim at least two values (batch 1 and 4, other dims
    8 and 13), except those pinned in ``fixed``. A model without dynamic dims gets one plan."""
    fixed = dict(fixed or {})
    free = [d for d in dynamic_dims(signature) if d not in fixed]
    if not free:
        return [fixed]
    plans = []
    for i in range(2):
        plan = dict(fixed)
        for name in free:
            plan[name] = (BATCH_VALUES if name in BATCH_NAMES else OTHER_VALUES)[i]
        plans.append(plan)
    return plans


def realistic_feeds(
    signature: Signature,
    dims: Mapping[str, int] | None = None,
    seed: int = 0,
    value_ranges: Mapping[str, tuple[int, int]] | None = None,
    *,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    unit_range: Collection[str] = (),
) -> dict[str, np.ndarray]:
    """Feeds for every input (at ``shapes`` where given, else symbolic dims from ``dims``),
    with language-model inputs made realistic:

    - ``*mask*`` inputs: 1 for tokens, 0 for padding; row 0 is never padded, every other row
      from row 1 on loses a random tail;
    - ids (``value_ranges`` or ``*ids*`` names): integers in range, 0 (the usual pad id) where
      the mask pads;
    - ``*token_type*`` / ``*segment*``: 0 for the first part of each row, 1 after;
    - ``*position*`` ids: 0..seq-1;
    - floats named in ``unit_range`` (images): uniform in [0, 1);
    - everything else as ``Signature.sample``.
    """
    rng = np.random.default_rng(seed)
    ranges = dict(value_ranges or {})
    feeds: dict[str, np.ndarray] = {}
    padding = None
    for spec in signature.inputs:
        shape = shapes[spec.name] if shapes else signature.resolve_shape(spec, dims)
        if _is_mask(spec):
            padding = _padding(shape, rng)
            feeds[spec.name] = _cast(padding, spec.dtype)
        elif spec.name in unit_range and spec.dtype.kind == "float":
            feeds[spec.name] = rng.random(shape, dtype=np.float32).astype(spec.dtype.numpy)
        else:
            feeds[spec.name] = _one(spec, shape, rng, ranges.get(spec.name))
    if padding is not None:
        for spec in signature.inputs:
            array = feeds[spec.name]
            if _is_ids(spec, ranges) and array.shape == padding.shape:
                feeds[spec.name] = np.where(padding.astype(bool), array, 0).astype(array.dtype)
    # numpy hands back scalars, not arrays, for the shape (); ONNX Runtime wants arrays
    return {name: np.asarray(value, dtype=value.dtype) for name, value in feeds.items()}


def _is_mask(spec: TensorSpec) -> bool:
    return "mask" in spec.name.lower() and spec.dtype.kind in ("int", "bool", "float")


def _is_ids(spec: TensorSpec, ranges: Mapping[str, Any]) -> bool:
    name = spec.name.lower()
    return spec.dtype.kind == "int" and (spec.name in ranges or name.endswith("ids"))


def _one(
    spec: TensorSpec, shape: tuple[int, ...], rng: np.random.Generator, span: tuple[int, int] | None
) -> np.ndarray:
    name = spec.name.lower()
    if spec.dtype.kind != "int":
        return random_array(spec.dtype, shape, rng)
    if "position" in name and shape:
        return np.broadcast_to(np.arange(shape[-1]), shape).astype(spec.dtype.numpy)
    if ("token_type" in name or "segment" in name) and shape:
        split = rng.integers(1, shape[-1] + 1, size=shape[:-1])[..., None]
        return (np.arange(shape[-1]) >= split).astype(spec.dtype.numpy)
    low, high = span if span is not None else (0, 8)
    return rng.integers(low, max(high, low + 1), size=shape).astype(spec.dtype.numpy)


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


def _cast(mask: np.ndarray, dtype: DType) -> np.ndarray:
    return mask.astype(dtype.numpy)


def verification_feeds(
    signature: Signature,
    samples: Sequence[Mapping[str, np.ndarray]] = (),
    value_ranges: Mapping[str, tuple[int, int]] | None = None,
    *,
    generated: Sequence[Mapping[str, np.ndarray]] | None = None,
) -> list[dict[str, np.ndarray]]:
    """The user's samples (checked against ``signature``), then ``generated`` feeds, or by
    default realistic ones for every shape of ``shape_plan`` (two values per dynamic axis)."""
    feeds = []
    for sample in samples:
        signature.validate(sample)
        feeds.append(dict(sample))
    if generated is not None:
        return feeds + [dict(f) for f in generated]
    for seed, dims in enumerate(shape_plan(signature)):
        feeds.append(realistic_feeds(signature, dims, seed=seed, value_ranges=value_ranges))
    return feeds
