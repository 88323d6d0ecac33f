"""Whether a new version may take over from a served one: the signature-change check.

    old = predecessor_of({1: v1}, 2)                  # v1: version 2 would take over from it
    signature_changes(v1.signature, v2.signature)    # ["input 'x' is FP64, was FP32"], or []
    check_signature(v2.signature, v1.signature, "1")  # SignatureChanged naming them, if any

A new version takes over from the version of the same number, or from the highest served one
when its number is above it (clients that name no version move to it). It may not, unless its
``ferry.toml`` sets ``allow_signature_change = true``, when a client of that version would find
it broken: inputs added, removed, or of another dtype, rank or fixed dim; outputs removed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from ..errors import FerryError
from ..signature import Signature, TensorSpec

T = TypeVar("T")


class SignatureChanged(FerryError):
    """A new version's signature differs from that of the version it would take over from
    (``signature_changes``), and its ``ferry.toml`` does not set ``allow_signature_change``."""


def predecessor_of(serving: Mapping[int, T], number: int) -> T | None:
    """The served version that version ``number`` would take over from: itself, or the highest
    one when ``number`` is above it (clients that name no version move to it); None when it
    takes over from nothing (the first load, or a version below the highest)."""
    if number in serving:
        return serving[number]
    highest = max(serving, default=0)
    return serving[highest] if number > highest > 0 else None


def check_signature(new: Signature, old: Signature, old_version: str) -> None:
    """SignatureChanged naming what ``signature_changes`` finds between ``old`` (the signature
    of version ``old_version``) and ``new``."""
    changes = signature_changes(old, new)
    if changes:
        shown = "; ".join(changes[:3]) + (
            f" and {len(changes) - 3} more" if len(changes) > 3 else ""
        )
        raise SignatureChanged(
            f"its signature differs from that of version {old_version}, which keeps serving: "
            f"{shown}",
            hint="set allow_signature_change = true in the model's ferry.toml to let it take over",
        )


def signature_changes(old: Signature, new: Signature) -> list[str]:
    """What a client of ``old`` would find broken in ``new``: inputs added, removed or with
    another dtype, rank or fixed dim, and outputs removed; [] when nothing.

        signature_changes(v1.signature, v2.signature)  # ["input 'x' is FP64, was FP32"]
    """
    before = {spec.name: spec for spec in old.inputs}
    after = {spec.name: spec for spec in new.inputs}
    changes = [f"input {n!r} is gone" for n in before if n not in after]
    changes += [f"input {n!r} is new" for n in after if n not in before]
    for name in before.keys() & after.keys():
        was, now = before[name], after[name]
        if _datatype(was) != _datatype(now):
            changes.append(f"input {name!r} is {_datatype(now)}, was {_datatype(was)}")
        elif not _same_dims(was, now):
            changes.append(f"input {name!r} has shape {now.shape_text()}, was {was.shape_text()}")
    outputs = set(new.output_names)
    changes += [f"output {n!r} is gone" for n in old.output_names if n not in outputs]
    return sorted(changes)


def _datatype(spec: TensorSpec) -> str:
    return spec.dtype.v2 or spec.dtype.onnx_name


def _same_dims(was: TensorSpec, now: TensorSpec) -> bool:
    """Same rank, and the same size on every axis fixed in either (symbolic names aside)."""
    if was.shape is None or now.shape is None:
        return was.shape is None and now.shape is None
    if len(was.shape) != len(now.shape):
        return False
    return all(
        a == b
        for a, b in zip(was.shape, now.shape, strict=True)
        if isinstance(a, int) or isinstance(b, int)
    )
