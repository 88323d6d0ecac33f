"""A federated client's data: the labelled .npz in its directory, checked against the model.

    path = shard_file("clients/a")                    # clients/a/train.npz, or its only .npz
    shard = load_shard("clients/a", model, "y")       # Shard: inputs, labels, where from
    shard.samples, shard.classes                      # 120, {0: 40, 1: 41, 2: 39}
    data = shard.dataset(module)                      # a training.Dataset for the module

A shard holds the model's inputs by name and the labels under ``labels_key`` (default: the
first of ``LABEL_KEYS`` present); a one-input model also takes its input under any other
single key. Float data of another width (sklearn's float64) is cast to the model's dtype;
shapes must fit the model's signature, with one label per sample. Every mistake is one line
naming the client's directory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data import load_npz_arrays
from ..errors import DataError, FerryError, UsageError
from ..model import Model
from ..signature import Signature

LABEL_KEYS = ("labels", "label", "y", "target", "targets")
"""Where labels are looked for when no key is named (as ``ferry optimize --eval`` does)."""

TRAIN_FILE = "train.npz"


@dataclass
class Shard:
    """One client's (or the eval set's) arrays: inputs by name, integer labels."""

    source: Path
    inputs: dict[str, np.ndarray]
    labels: np.ndarray

    @property
    def samples(self) -> int:
        return int(self.labels.shape[0])

    @property
    def classes(self) -> dict[int, int]:
        """How many samples each label has."""
        values, counts = np.unique(self.labels, return_counts=True)
        return {int(v): int(c) for v, c in zip(values, counts, strict=True)}

    def dataset(self, module: Any) -> Any:
        """The arrays as a ``training.Dataset`` for the converted ``module``."""
        from .training import Dataset

        return Dataset.of(module, self.inputs, self.labels)


def shard_file(where: str | Path) -> Path:
    """The client's .npz: ``where`` itself, ``where/train.npz``, or the only .npz in it."""
    path = Path(where)
    if path.is_file():
        return path
    if not path.is_dir():
        raise UsageError("no such file or directory", hint="check the path")
    if (path / TRAIN_FILE).is_file():
        return path / TRAIN_FILE
    found = sorted(path.glob("*.npz"))
    if len(found) != 1:
        what = "no .npz file" if not found else f"{len(found)} .npz files"
        raise DataError(
            f"{what} and no {TRAIN_FILE}",
            hint=f"put the client's data in {path / TRAIN_FILE} (inputs and labels)",
        )
    return found[0]


def load_shard(
    where: str | Path, model: Model, labels_key: str | None = None, what: str | None = None
) -> Shard:
    """The shard in ``where`` (see ``shard_file``), checked against ``model``'s signature;
    errors start with ``what`` (default: "client WHERE")."""
    what = what or f"client {where}"
    try:
        path = shard_file(where)
        inputs, labels = split_arrays(load_npz_arrays(path), model.signature, labels_key)
    except FerryError as e:
        raise type(e)(f"{what}: {e.message}", hint=e.hint) from e
    return Shard(path, inputs, labels)


def split_arrays(
    arrays: Mapping[str, np.ndarray], signature: Signature, labels_key: str | None
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(inputs by name, labels) from a shard's arrays; DataError or FeedError when they do
    not fit the signature."""
    arrays = dict(arrays)
    key = labels_key or next((k for k in LABEL_KEYS if k in arrays), None)
    if key is None or key not in arrays:
        named = f"no labels under {key!r}" if key else "no labels"
        raise DataError(
            f"{named} (keys: {', '.join(arrays) or 'none'})",
            hint=f"store class indices under {labels_key or ' or '.join(LABEL_KEYS)} "
            "(or name the key with --labels)",
        )
    labels = np.asarray(arrays.pop(key))
    names = signature.input_names
    if len(names) == 1 and names[0] not in arrays and len(arrays) == 1:
        arrays = {names[0]: next(iter(arrays.values()))}
    inputs = {n: _as_model_dtype(arrays[n], signature, n) for n in names if n in arrays}
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(
            f"labels must be a 1-D array of integer classes, not {labels.dtype} "
            f"{list(labels.shape)}",
            hint="store class indices (0..C-1)",
        )
    if labels.size == 0:
        raise DataError("the shard has no samples", hint="give every client some data")
    signature.validate({n: a[:2] for n, a in inputs.items()} | _missing(arrays, names))
    for name, array in inputs.items():
        if array.shape[0] != labels.shape[0]:
            raise DataError(
                f"input {name!r} has {array.shape[0]} rows but there are {labels.shape[0]} labels",
                hint="give one label per sample",
            )
    return inputs, labels.astype(np.int64)


def _missing(arrays: Mapping[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    """Keys that are not inputs, passed on so the signature names the first stray one."""
    return {k: v for k, v in arrays.items() if k not in names}


def _as_model_dtype(array: np.ndarray, signature: Signature, name: str) -> np.ndarray:
    want = signature.input(name).dtype.numpy
    array = np.asarray(array)
    if array.dtype.kind == want.kind == "f":
        return array.astype(want, copy=False)
    return array
