"""The pass catalog: which passes exist, by the name recipes use, as data.

    list_passes()                                     # [PassInfo(name, family, ...)], in order
    make_pass("int8_dynamic", {"per_channel": True})  # UsageError on a bad name or parameter
    mine = BUILTIN.with_passes(MyPass)                # a catalog of one's own (tests, plugins)
    Recipe.of(["my_pass", "fold"], catalog=mine)

A catalog maps each name to ``"module:Class"`` (imported when first used, so ``import
onnxferry`` loads no pass module) or to a ``Pass`` class. Nothing registers itself: a pass
exists for recipes and ``ferry passes`` because a line of ``BUILTIN_PASSES`` names it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from .base import Pass, PassInfo

BUILTIN_PASSES: Mapping[str, str] = {
    "ort_graph": "onnxferry.optimize.graph:OrtGraph",
    "slim": "onnxferry.optimize.slim:Slim",
    "fold": "onnxferry.optimize.slim:Fold",
    "int8_dynamic": "onnxferry.optimize.quantize:DynamicInt8",
    "int8_static": "onnxferry.optimize.quantize:StaticInt8",
    "fp16": "onnxferry.optimize.fp16:Float16",
    "prune_magnitude": "onnxferry.optimize.prune:MagnitudePrune",
    "prune_channels": "onnxferry.optimize.prune:ChannelPrune",
    "smooth": "onnxferry.optimize.smooth:Smooth",
    "fuse_transformer": "onnxferry.optimize.fusion:TransformerFusion",
    "weight_only": "onnxferry.optimize.weight_only:WeightOnly",
    "flush_denormals": "onnxferry.optimize.flush:FlushDenormals",
}
"""Every built-in pass: its recipe name and where its class lives."""


@dataclass(frozen=True)
class Catalog:
    """Passes by name: ``"module:Class"`` references or classes, in listing order."""

    entries: Mapping[str, str | type[Pass]]

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, name: str) -> type[Pass]:
        """The class of pass ``name``; UsageError (with the known names) when there is none."""
        if name not in self.entries:
            raise UsageError(f"unknown pass {name!r}", hint=f"known passes: {', '.join(self)}")
        cls = _resolve(self.entries[name])
        if cls.name != name:
            raise TypeError(f"the catalog lists {cls.__qualname__} as {name!r}, not {cls.name!r}")
        return cls

    def make(self, name: str, params: Mapping[str, Any] | None = None) -> Pass:
        """The pass ``name`` with ``params`` checked against its declared parameters."""
        return self.get(name).from_params(params)

    def describe(self) -> list[PassInfo]:
        """Every pass, described (imports the pass modules)."""
        return [self.get(name).info() for name in self]

    def with_passes(self, *classes: type[Pass]) -> Catalog:
        """This catalog and ``classes`` (by their ``name``; a name may not be taken twice)."""
        entries = dict(self.entries)
        for cls in classes:
            if not cls.name or cls.name in entries:
                raise ValueError(f"pass name {cls.name!r} is empty or taken")
            entries[cls.name] = cls
        return Catalog(entries)


BUILTIN = Catalog(BUILTIN_PASSES)
"""The catalog recipes, ``make_pass`` and ``ferry passes`` use unless given another."""


def make_pass(
    name: str, params: Mapping[str, Any] | None = None, catalog: Catalog = BUILTIN
) -> Pass:
    """The pass ``name`` of ``catalog`` with ``params`` checked (UsageError, exit 2)."""
    return catalog.make(name, params)


def list_passes(catalog: Catalog = BUILTIN) -> list[PassInfo]:
    """Every pass of ``catalog`` with its family, description and parameters (defaults)."""
    return catalog.describe()


def _resolve(entry: str | type[Pass]) -> type[Pass]:
    if not isinstance(entry, str):
        return entry
    module, _, attribute = entry.partition(":")
    cls = getattr(importlib.import_module(module), attribute)
    if not (isinstance(cls, type) and issubclass(cls, Pass)):
        raise TypeError(f"{entry} is not a Pass class")
    return cls
