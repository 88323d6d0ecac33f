"""Honest judging data and batch-1 timing for the search: split the user's rows into the part
the search tunes on and the part it is judged on, and time at the batch the model will serve.

    split = split_holdout(model.signature, feeds)         # HoldOut: tune, judge (+ labels)
    split.tune, split.judge, split.note       # "tuned on 1 feed set(s), judged on 1 held-out ..."
    timing = timing_feeds(model.signature, feeds, batch=1)   # first row of each batched input

A search that calibrates, ranks sensitivity and rolls back on the same rows it is judged on
can return a model that only passes there. The split is by feed set when there are several,
else by rows along each input's batch axis (``Signature.row_axes``); a single set of one row
cannot be split, and the note says the budget is then judged on the tuning data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import DataError, UsageError
from ..signature import Signature

Feeds = dict[str, np.ndarray]


@dataclass
class HoldOut:
    """The rows the search tunes on (calibration, sensitivity, rollbacks) and those that judge
    its answer; ``held_out`` is False when the two are the same data."""

    tune: list[Feeds]
    judge: list[Feeds]
    tune_labels: list[np.ndarray] | None = None
    judge_labels: list[np.ndarray] | None = None
    held_out: bool = True
    note: str = ""


def rows(signature: Signature, feeds: Mapping[str, np.ndarray]) -> int:
    """Rows along the batch axis of ``feeds`` (1 when no input has one)."""
    axes = signature.row_axes()
    counts = {n for k, axis in axes.items() if (n := _rows_of(feeds, k, axis)) is not None}
    return min(counts) if counts else 1


def _rows_of(feeds: Mapping[str, np.ndarray], name: str, axis: int | None) -> int | None:
    """``feeds[name]``'s rows along ``axis``; None for an input without rows there."""
    value = feeds.get(name)
    if value is None or axis is None or np.ndim(value) <= axis:
        return None
    return int(np.shape(value)[axis])


def take_rows(signature: Signature, feeds: Mapping[str, np.ndarray], index: slice) -> Feeds:
    """``feeds`` with every input's rows (``Signature.row_axes``) cut to ``index``; inputs
    without rows whole."""
    axes = signature.row_axes()
    return {
        k: _along(v, axes.get(k), lambda a, axis: a[(slice(None),) * axis + (index,)])
        for k, v in feeds.items()
    }


def _along(
    value: np.ndarray, axis: int | None, cut: Callable[[np.ndarray, int], np.ndarray]
) -> np.ndarray:
    return value if axis is None or np.ndim(value) <= axis else cut(value, axis)


def split_holdout(
    signature: Signature,
    feeds: Sequence[Mapping[str, np.ndarray]],
    labels: Sequence[np.ndarray] | None = None,
    *,
    judge_share: float = 0.5,
) -> HoldOut:
    """Split ``feeds`` (and ``labels``) into tuning and judging data: whole feed sets when
    there are at least two, else rows of the single set (the last ``judge_share`` of them)."""
    sets = [dict(f) for f in feeds]
    if not sets:
        raise UsageError("the search needs at least one feed set to judge on")
    if len(sets) >= 2:
        cut = max(1, min(len(sets) - 1, round(len(sets) * (1 - judge_share))))
        return HoldOut(
            sets[:cut],
            sets[cut:],
            None if labels is None else list(labels[:cut]),
            None if labels is None else list(labels[cut:]),
            note=f"tuned on {cut} feed set(s), judged on {len(sets) - cut} held-out set(s)",
        )
    count = rows(signature, sets[0])
    if count < 2:
        return HoldOut(
            sets,
            sets,
            None if labels is None else list(labels),
            None if labels is None else list(labels),
            held_out=False,
            note="one feed set of one row cannot be split: the budget is judged on the data "
            "the search tuned on (give more rows, or judge_inputs)",
        )
    cut = max(1, min(count - 1, round(count * (1 - judge_share))))
    tune = [take_rows(signature, sets[0], slice(0, cut))]
    judge = [take_rows(signature, sets[0], slice(cut, count))]
    return HoldOut(
        tune,
        judge,
        None if labels is None else [np.asarray(labels[0])[:cut]],
        None if labels is None else [np.asarray(labels[0])[cut:]],
        note=f"tuned on {cut} row(s), judged on {count - cut} held-out row(s)",
    )


def timing_feeds(
    signature: Signature, feeds: Sequence[Mapping[str, np.ndarray]], batch: int = 1
) -> Feeds:
    """What latency is measured on: ``batch`` rows of the first feed set (rows repeat when it
    has fewer). Inputs without rows (``Signature.row_axes``) are taken whole."""
    if batch < 1:
        raise UsageError(f"batch must be at least 1, got {batch}", hint="e.g. --batch 1")
    first = feeds[0]
    have = rows(signature, first)
    if have == 0:
        empty = next(k for k, axis in signature.row_axes().items() if _rows_of(first, k, axis) == 0)
        raise DataError(
            f"input {empty!r} holds no rows ({list(np.shape(first[empty]))}): latency cannot be "
            "measured, nor accuracy judged, on nothing",
            hint="give inputs with at least one row",
        )
    picked = take_rows(signature, first, slice(0, min(batch, have)))
    if batch <= have:
        return picked
    axes, repeat = signature.row_axes(), -(-batch // have)
    repeated = {
        k: _along(v, axes.get(k), lambda a, axis: np.concatenate([a] * repeat, axis=axis))
        for k, v in picked.items()
    }
    return take_rows(signature, repeated, slice(0, batch))
