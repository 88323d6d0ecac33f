"""Calibration data for static int8: feed sets from files, lists or a user's data reader.

    feeds = load_calibration("calib.npz", model.signature)    # stacked samples or one feed set
    feeds = load_calibration("calib/", model.signature)       # .npz files, test_data_set dirs
    feeds = calibration_feeds(my_reader, model.signature)     # anything with get_next()
    reader = FeedsReader(feeds, model.signature, limit=100)   # what ORT's quantize_static reads

An ``.npz`` or ``.npy`` whose arrays have one more dimension than the model's inputs holds
stacked samples (dim 0 counts them); one with the inputs' rank is a single feed set. Every
sample is checked against the signature; a mismatch is a ``DataError`` naming the sample and
the tensor, and an empty set is a ``UsageError`` (both exit 2).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..data import load_feeds
from ..errors import DataError, UsageError
from ..feeds import checked_feeds
from ..signature import Signature

Feeds = dict[str, np.ndarray]


class FeedsReader:
    """ONNX Runtime's CalibrationDataReader over a list of feed sets, checked up front.

    It needs no import of onnxruntime.quantization: ORT's ``CalibrationDataReader`` accepts any
    class with ``get_next`` (its ``__subclasshook__``), so ``isinstance`` holds.
    """

    def __init__(
        self,
        feeds: Iterable[Mapping[str, np.ndarray]],
        signature: Signature | None = None,
        limit: int | None = None,
    ) -> None:
        self.all_feeds = checked_calibration(feeds, signature, limit)
        self.feeds = self.all_feeds
        self._next = 0

    def get_next(self) -> Feeds | None:
        """The next feed set, or None at the end (what ORT's calibrators loop on)."""
        if self._next >= len(self.feeds):
            return None
        self._next += 1
        return dict(self.feeds[self._next - 1])

    def rewind(self) -> None:
        self._next = 0

    def set_range(self, start_index: int, end_index: int) -> None:
        """Read only samples [start_index, end_index) of all (ORT's strided calibration)."""
        self.feeds = self.all_feeds[start_index:end_index]
        self._next = 0

    def __len__(self) -> int:
        return len(self.all_feeds)

    def __iter__(self) -> FeedsReader:
        return self

    def __next__(self) -> Feeds:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def load_calibration(path: str | Path, signature: Signature) -> list[Feeds]:
    """Feed sets from an ``.npz`` (stacked samples or one feed set), an ``.npy`` / ``.pb``, or
    a directory of ``.npz`` files or ONNX ``test_data_set`` directories (see ``load_feeds``)."""
    sets = load_feeds(path, signature)
    if Path(path).is_file() and Path(path).suffix.lower() in (".npz", ".npy") and len(sets) == 1:
        sets = _unstack(sets[0], signature, str(path))
    return checked_calibration(sets, signature, where=str(path))


def calibration_feeds(
    source: Any,
    signature: Signature,
    limit: int | None = None,
) -> list[Feeds]:
    """Feed sets from a path, a list of feed dicts, or a data reader (anything with
    ``get_next()`` returning a feed dict, then None); at most ``limit`` are read."""
    if isinstance(source, (str, Path)):
        return checked_calibration(load_calibration(source, signature), signature, limit)
    if isinstance(source, Mapping):
        return checked_calibration([source], signature, limit)
    get_next = getattr(source, "get_next", None)
    if callable(get_next):
        drained: list[Mapping[str, np.ndarray]] = []
        while limit is None or len(drained) < limit:
            item = get_next()
            if item is None:
                break
            if not isinstance(item, Mapping):
                raise DataError(
                    f"calibration reader returned a {type(item).__name__}, not a dict of arrays",
                    hint="get_next() must return {input name: numpy array}, then None",
                )
            drained.append(item)
        return checked_calibration(drained, signature, where="calibration reader")
    if isinstance(source, Iterable) and not isinstance(source, (str, bytes)):
        return checked_calibration(source, signature, limit)
    raise UsageError(
        f"cannot read calibration data from a {type(source).__name__}",
        hint="give a path (.npz or a directory), a list of feed dicts or a reader with get_next()",
    )


def checked_calibration(
    feeds: Iterable[Mapping[str, np.ndarray]],
    signature: Signature | None,
    limit: int | None = None,
    where: str = "calibration",
) -> list[Feeds]:
    """The first ``limit`` feed sets as plain dicts, each checked against ``signature`` by the
    one check of given feeds (``feeds.checked_feeds``): DataError naming ``where`` and the
    sample, UsageError when there are none."""
    return checked_feeds(
        feeds, signature, where=where, kind="calibration", limit=limit, error=DataError
    )


def by_shape(feeds: list[Feeds]) -> tuple[list[Feeds], int]:
    """The feed sets grouped by their shapes (stable), and the largest run length that splits
    every group evenly: ORT's histogram calibrators (entropy, percentile) stack each run's
    outputs, so one run must not mix shapes."""
    groups: dict[tuple[Any, ...], list[Feeds]] = {}
    for feed in feeds:
        key = tuple((name, array.shape) for name, array in feed.items())
        groups.setdefault(key, []).append(feed)
    ordered = [feed for group in groups.values() for feed in group]
    return ordered, math.gcd(*(len(group) for group in groups.values()))


def _unstack(arrays: Feeds, signature: Signature, where: str) -> list[Feeds]:
    """Split arrays stacked along dim 0 (one more dim than the inputs) into samples."""
    stacked = {
        spec.name: spec.shape is not None and arrays[spec.name].ndim == len(spec.shape) + 1
        for spec in signature.inputs
        if spec.name in arrays
    }
    if not any(stacked.values()):
        return [arrays]
    if not all(stacked.values()):
        flat = sorted(n for n, s in stacked.items() if not s)
        raise DataError(
            f"{where} stacks some inputs along a sample dimension but not {flat}",
            hint="stack every input along dim 0 (one row per sample), or save one feed set",
        )
    counts = {name: int(arrays[name].shape[0]) for name in stacked}
    if len(set(counts.values())) != 1:
        raise DataError(
            f"{where}: inputs hold different numbers of samples {counts}",
            hint="stack the same number of samples for every input",
        )
    n = next(iter(counts.values()))
    return [{name: arrays[name][i] for name in arrays} for i in range(n)]
