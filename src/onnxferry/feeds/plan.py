"""Sizes: a concrete shape for every input, the user's where given, else ones that run.

    plan = plan_feeds(model, dims={"sequence": 128})    # FeedError when no candidate runs
    plan.shapes, plan.guessed, plan.choices              # the sizes, and how they were chosen
    feeds = plan.feeds(seed=0)                           # values by ``values.realistic_feeds``

The rules for choosing sizes are in the package docstring (``onnxferry.feeds``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import FeedError, UsageError, one_line
from ..model import Model
from ..runtime import (
    SessionConfig,
    create_session,
    ort_error_message,
    quiet_run_options,
    run_session,
)
from ..signature import Signature, TensorSpec
from .dims import evaluate, terms
from .ranges import index_ranges, input_vocabularies
from .values import BATCH_NAMES, Vocabulary, realistic_feeds

CANDIDATES: dict[str, tuple[int, ...]] = {
    "spatial": (224, 640, 32, 64, 8, 1),
    "sequence": (16, 128, 8, 1, 64, 32),
    "other": (8, 16, 1, 32, 128, 224, 512, 1024, 16000),
}
"""Sizes tried in order for unknown dims of each kind; trial k takes the k-th of each (the
last of a shorter list). The large "other" sizes are for signals: a waveform's samples meet
a 512-wide STFT window (openWakeWord's melspectrogram needs 512 or more)."""

_SEQUENCE_PARTS = ("past", "cache")
"""Parts of a dim's name that make it a sequence, whatever the input looks like: a decoder's
cache ``[batch, heads, past_sequence_length, head_dim]`` with 1, 3 or 4 heads is no image.
(A plain "sequence" can be audio samples, which need the "other" sizes.)"""

MAX_ELEMENTS = 2**24
"""Chosen sizes giving more input elements than this (64 MiB of float32) are passed over for
the next candidates: with many open dims, 224 each would not fit in memory."""


@dataclass(frozen=True)
class Unknown:
    """One dim the model leaves open: which input and axis, its symbol (None if unnamed) and
    what it looks like ("batch", "spatial", "sequence" or "other")."""

    input: str
    axis: int
    symbol: str | None
    kind: str

    @property
    def key(self) -> str:
        """How the user names it: the symbol, or ``input:axis`` for an unnamed dim."""
        return self.symbol or f"{self.input}:{self.axis}"


@dataclass
class FeedPlan:
    """Concrete shapes for every input of ``signature``, and how the open dims were chosen.

    ``guessed`` is True when a size other than a batch axis was chosen here rather than given
    by the user; a verb that judges accuracy on such sizes must say so.
    """

    signature: Signature
    sizes: dict[str, int]
    """Size of every open dim, by ``Unknown.key``."""
    value_ranges: dict[str, tuple[int, int]] = field(default_factory=dict)
    unit_range: frozenset[str] = frozenset()
    choices: list[str] = field(default_factory=list)
    guessed: bool = False
    vocabularies: dict[str, Vocabulary] = field(default_factory=dict)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The concrete shape of every input."""
        return _shapes(self.signature, self.sizes)

    @property
    def batch(self) -> int:
        """The size of the batch axes (1 when the model has none)."""
        keys = batch_symbols(self.signature)
        return next((self.sizes[k] for k in keys if k in self.sizes), 1)

    def with_batch(self, batch: int) -> FeedPlan:
        """The same plan with every batch axis at ``batch``."""
        sizes = dict(self.sizes) | dict.fromkeys(batch_symbols(self.signature), batch)
        return replace(self, sizes=sizes)

    def feeds(self, seed: int = 0) -> dict[str, np.ndarray]:
        """One set of feeds at the planned shapes (different values per seed)."""
        return realistic_feeds(
            self.signature,
            seed=seed,
            value_ranges=self.value_ranges,
            shapes=self.shapes,
            unit_range=self.unit_range,
            vocabularies=self.vocabularies,
        )

    def describe(self) -> str:
        """The shapes on one line, e.g. "x[1,3,224,224], ids[1,16]"."""
        return describe_shapes(self.shapes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "shapes": {k: list(v) for k, v in self.shapes.items()},
            "guessed": self.guessed,
            "choices": list(self.choices),
            "value_ranges": {k: list(v) for k, v in self.value_ranges.items()},
            "vocabularies": {
                k: {"words": len(v.words), "text": v.text} for k, v in self.vocabularies.items()
            },
        }


def describe_shapes(shapes: Mapping[str, Sequence[int]]) -> str:
    return ", ".join(f"{k}[{','.join(str(d) for d in v)}]" for k, v in shapes.items())


def plan_feeds(
    model: Model | Signature,
    *,
    dims: Mapping[str, int] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    batch: int | None = None,
    probe: bool = True,
    session: Any = None,
) -> FeedPlan:
    """Sizes for every input (see the module docstring); FeedError when no size runs.

    ``probe=False`` skips the ONNX Runtime runs and takes the first candidate of each kind
    (so does a bare Signature, e.g. a remote server's, which has no graph to run or read).
    ``session`` is an InferenceSession of the model to probe with (default: a new one on the
    CPU with one thread).
    """
    if isinstance(model, Signature):
        signature, proto, probe = model, None, False
    else:
        signature, proto = model.signature, model.proto
    signature = _ranked(signature, input_shapes or {})
    _shapes(signature, {u.key: 1 for u in unknown_dims(signature)})  # FeedError: unknown rank
    given = _given(signature, dims or {}, input_shapes or {})
    unknowns = list(unknown_dims(signature))
    for u in unknowns:
        if u.kind == "batch" and batch is not None and u.key not in given:
            given[u.key] = batch
    ranges = index_ranges(proto, signature) if proto is not None else {}
    words = input_vocabularies(proto, signature) if proto is not None else {}
    images = frozenset(s.name for s in signature.inputs if image_axes(s) is not None)
    derived = {u.key: found for u in unknowns if (found := terms(u.symbol)) is not None}
    open_dims = [u for u in unknowns if u.key not in given and u.key not in derived]
    chosen_kinds: dict[str, str] = {}
    for u in open_dims:  # a symbol's first kind, unless it is a batch axis anywhere
        if u.key not in chosen_kinds or u.kind == "batch":
            chosen_kinds[u.key] = u.kind
    for expression in derived.values():  # a term seen only inside expressions is chosen too
        for name in expression:
            if name not in given and name not in chosen_kinds:
                chosen_kinds[name] = "batch" if name in BATCH_NAMES else "sequence"
    trials = max((len(CANDIDATES[k]) for k in chosen_kinds.values() if k != "batch"), default=1)
    choosing = any(kind != "batch" for kind in chosen_kinds.values())
    errors: list[str] = []
    tried: list[str] = []
    seen: list[dict[str, int]] = []
    for trial in range(trials):
        sizes = dict(given)
        for key, kind in chosen_kinds.items():
            sizes[key] = 1 if kind == "batch" else _candidate(kind, trial)
        if sizes in seen:  # only a longer list moved on
            continue
        seen.append(sizes)
        plan = FeedPlan(signature, sizes, ranges, images, vocabularies=words)
        elements = sum(math.prod(shape) for shape in plan.shapes.values())
        if choosing and elements > MAX_ELEMENTS:
            tried.append(f"{plan.describe()} (over {MAX_ELEMENTS} elements, not run)")
            continue
        if probe and choosing:
            if session is None:
                assert isinstance(model, Model)
                session = create_session(model, SessionConfig(threads=1))
            error = _runs(session, plan)
            if error is not None:
                tried.append(plan.describe())
                errors.append(error)
                continue
        plan.guessed = choosing
        plan.choices = _choices(chosen_kinds, sizes, trial, probe) + [
            f"{key} = {evaluate(key, sizes)} (from its terms)"
            for key in derived
            if key not in given
        ]
        return plan
    names = list(dict.fromkeys(u.input for u in open_dims))
    said = f"; onnxruntime said: {one_line(errors[0], 160)}" if errors else ""
    raise FeedError(
        f"found no sizes for the open dims of {', '.join(names)} that the model runs with "
        f"(tried {'; '.join(tried)}{said})",
        hint="give the sizes, e.g. "
        + " ".join(f"--input-shape {n}=..." for n in names)
        + ", or --dim NAME=N",
    )


def unknown_dims(signature: Signature) -> Iterator[Unknown]:
    """Every open dim of the inputs, in order (a named symbol once per place it appears)."""
    rows = signature.row_axes()
    indexed = signature.indexed_axes()
    for spec in signature.inputs:
        image = image_axes(spec)
        for axis, d in enumerate(spec.shape or ()):
            if isinstance(d, int):
                continue
            if d is None and axis > 0 and axis == rows[spec.name]:  # a state [2, ?, 128]
                yield Unknown(spec.name, axis, d, "batch")
                continue
            kind = _kind(spec, axis, d, image)
            if kind == "batch" and (spec.name, axis) in indexed:
                kind = "other"  # a graph's nodes, which its edges number: no batch
            yield Unknown(spec.name, axis, d, kind)


def batch_symbols(signature: Signature) -> set[str]:
    """Keys (see ``Unknown.key``) of the open dims that are batch axes."""
    return {u.key for u in unknown_dims(signature) if u.kind == "batch"}


def _kind(spec: TensorSpec, axis: int, symbol: str | None, image: tuple[int, int] | None) -> str:
    rank = len(spec.shape or ())
    shape = spec.shape or ()
    named_before = any(isinstance(d, str) and d in BATCH_NAMES for d in shape[:axis])
    if (symbol is not None and symbol in BATCH_NAMES and not named_before) or (
        axis == 0 and rank >= 2
    ):
        return "batch"  # one batch name per input: waveforms[batch_size, N] has N samples
    if symbol is not None and any(part in symbol.lower() for part in _SEQUENCE_PARTS):
        return "sequence"
    if image is not None and axis in image:
        return "spatial"
    if axis == rank - 1 and rank == 2 and spec.dtype.kind == "int":
        return "sequence"
    if axis == 1 and rank == 3 and spec.dtype.kind == "float":
        return "sequence"
    return "other"


def image_axes(spec: TensorSpec) -> tuple[int, int] | None:
    """The spatial axes of a float NCHW or NHWC image input (channels 1, 3 or 4), or None."""
    shape = spec.shape
    if shape is None or len(shape) != 4 or spec.dtype.kind != "float":
        return None
    if shape[1] in (1, 3, 4):
        return (2, 3)
    if shape[3] in (1, 3, 4):
        return (1, 2)
    return None


def _ranked(signature: Signature, input_shapes: Mapping[str, Sequence[int]]) -> Signature:
    """``signature`` with each input of unknown rank at the shape ``input_shapes`` gives it."""
    if not any(s.shape is None and s.name in input_shapes for s in signature.inputs):
        return signature
    inputs = tuple(
        replace(s, shape=tuple(int(d) for d in input_shapes[s.name]))
        if s.shape is None and s.name in input_shapes
        else s
        for s in signature.inputs
    )
    return replace(signature, inputs=inputs)


def _given(
    signature: Signature, dims: Mapping[str, int], input_shapes: Mapping[str, Sequence[int]]
) -> dict[str, int]:
    """Sizes the user gave, by ``Unknown.key``; UsageError for a name the model lacks."""
    keys = {u.key for u in unknown_dims(signature)}
    symbols = {u.symbol for u in unknown_dims(signature) if u.symbol}
    given: dict[str, int] = {}
    for key, value in dims.items():
        if value < 1:
            raise UsageError(f"dim {key}={value} must be at least 1", hint=f"pass {key}=1 or more")
        if key in keys or key in symbols:
            given[key] = int(value)
        elif key in signature.input_names:  # a whole input's leading dim, as resolve_shape
            spec = signature.input(key)
            if spec.shape and not isinstance(spec.shape[0], int):
                given[spec.shape[0] or f"{key}:0"] = int(value)
        else:
            raise UsageError(
                f"the model has no open dim {key!r}",
                hint=f"open dims are {', '.join(sorted(keys)) or 'none'}",
            )
    for name, shape in input_shapes.items():
        spec = signature.input(name)
        if spec.shape is not None and len(spec.shape) != len(shape):
            raise UsageError(
                f"--input-shape {name} has rank {len(shape)}, but the model's {name!r} is "
                f"{spec.shape_text()}",
                hint=f"give {len(spec.shape)} sizes",
            )
        for axis, (want, have) in enumerate(zip(spec.shape or (), shape, strict=True)):
            if isinstance(want, int) and want != have:
                raise UsageError(
                    f"--input-shape {name} sets dim {axis} to {have}, but the model fixes it "
                    f"at {want}",
                    hint=f"the model's {name!r} is {spec.shape_text()}",
                )
            if not isinstance(want, int):
                given[want or f"{name}:{axis}"] = int(have)
    return given


def _shapes(signature: Signature, sizes: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for spec in signature.inputs:
        if not spec.is_array:
            raise spec.not_an_array()
        if spec.shape is None:
            raise FeedError(
                f"input {spec.name!r} has an unknown rank, so no input can be made for it",
                hint=f"give its shape (--input-shape {spec.name}=2x3x...) or inputs "
                "(--inputs feeds.npz)",
            )
        shapes[spec.name] = tuple(
            d if isinstance(d, int) else _size(d or f"{spec.name}:{axis}", sizes)
            for axis, d in enumerate(spec.shape)
        )
    return shapes


def _size(key: str, sizes: Mapping[str, int]) -> int:
    """A dim's size: given or chosen, or computed from its terms (``dims``)."""
    if key in sizes or terms(key) is None:
        return sizes[key]
    value = evaluate(key, sizes)
    if value is None or value < 0:
        raise FeedError(
            f"dim {key!r} comes to {value} at {', '.join(f'{k}={v}' for k, v in sizes.items())}",
            hint="give its terms sizes that make it 0 or more (--dim NAME=N)",
        )
    return value


def _runs(session: Any, plan: FeedPlan) -> str | None:
    """None when ONNX Runtime runs the plan's feeds, else its error on one line."""
    try:
        run_session(session, None, plan.feeds(seed=0), quiet_run_options())
    except Exception as e:  # onnxruntime raises untyped errors for shapes it cannot take
        return ort_error_message(e)
    return None


def _candidate(kind: str, trial: int) -> int:
    sizes = CANDIDATES[kind]
    return sizes[min(trial, len(sizes) - 1)]


def _choices(
    kinds: Mapping[str, str], sizes: Mapping[str, int], trial: int, probe: bool
) -> list[str]:
    how = "the first that ran" if probe else "not run first"
    out = []
    for key, kind in kinds.items():
        if kind == "batch":
            out.append(f"{key} = 1 (batch axis)")
        else:
            tried = ", ".join(str(c) for c in CANDIDATES[kind][: trial + 1])
            out.append(f"{key} = {sizes[key]} ({kind}; tried {tried}: {how})")
    return out
