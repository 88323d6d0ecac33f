"""Which nodes of a model are new or changed against another (the model before a pass), and
which of the other's nodes are gone.

    found = diff_nodes(Inventory.of(optimized), Inventory.of(model))
    found.added, found.changed, found.removed    # site keys; key -> why; "Op name" texts

Nodes match by name first (a name both models hold once), then by signature (domain, op type
and input tensors) among the nodes still unmatched. A matched node is changed when its op type
or its attributes differ, or a weight folded into it (an initializer or a Constant it takes)
has another dtype, shape or value. Subgraph attributes are not compared as a whole: their nodes
are matched on their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .inventory import Inventory, Site

if TYPE_CHECKING:
    import onnx


@dataclass(frozen=True)
class NodeDiff:
    """Site keys of the added nodes, changed nodes (with what changed), and the removed
    nodes of the other model as "OpType name" texts."""

    added: frozenset[str]
    changed: Mapping[str, str]
    removed: tuple[str, ...] = field(default=())

    def summary(self) -> str:
        """E.g. "2 added, 1 changed, 3 removed"."""
        return f"{len(self.added)} added, {len(self.changed)} changed, {len(self.removed)} removed"


def diff_nodes(model: Inventory, other: Inventory) -> NodeDiff:
    """``model``'s drawn nodes against ``other``'s (see the module for the rules)."""
    mine, theirs = model.drawn, other.drawn
    match: dict[str, Site] = {}
    taken: set[str] = set()
    by_name, mine_named = _unique_names(theirs), _unique_names(mine)
    for site in mine:
        found = by_name.get(site.node.name) if site.node.name in mine_named else None
        if found is not None and found.key not in taken:
            match[site.key] = found
            taken.add(found.key)
    by_signature: dict[tuple[str, str, tuple[str, ...]], list[Site]] = {}
    for site in theirs:
        if site.key not in taken:
            by_signature.setdefault(_signature(site.node), []).append(site)
    for site in mine:
        if site.key in match:
            continue
        candidates = by_signature.get(_signature(site.node), [])
        if candidates:
            match[site.key] = candidates.pop(0)
            taken.add(match[site.key].key)
    changed = {}
    for site in mine:
        if site.key in match:
            why = _change(site.node, match[site.key].node, model, other)
            if why:
                changed[site.key] = why
    added = frozenset(s.key for s in mine if s.key not in match)
    removed = tuple(f"{s.node.op_type} {s.node.name}".strip() for s in theirs if s.key not in taken)
    return NodeDiff(added, changed, removed)


def _unique_names(sites: list[Site]) -> dict[str, Site]:
    seen: dict[str, list[Site]] = {}
    for site in sites:
        if site.node.name:
            seen.setdefault(site.node.name, []).append(site)
    return {name: found[0] for name, found in seen.items() if len(found) == 1}


def _signature(node: onnx.NodeProto) -> tuple[str, str, tuple[str, ...]]:
    return node.domain, node.op_type, tuple(node.input)


def _change(node: onnx.NodeProto, old: onnx.NodeProto, mine: Inventory, theirs: Inventory) -> str:
    """What differs between two matched nodes, "" when nothing does."""
    if (node.domain, node.op_type) != (old.domain, old.op_type):
        return f"op type {old.op_type} -> {node.op_type}"
    attrs, old_attrs = _attributes(node), _attributes(old)
    if attrs != old_attrs:
        names = sorted(
            n for n in attrs.keys() | old_attrs.keys() if attrs.get(n) != old_attrs.get(n)
        )
        return f"attributes {', '.join(names)}"
    for slot, (name, old_name) in enumerate(zip(node.input, old.input, strict=False)):
        weight, old_weight = mine.weights.get(name), theirs.weights.get(old_name)
        if (weight is None) != (old_weight is None):
            return f"input {slot} is {'now' if weight else 'no longer'} a weight"
        if weight is None or old_weight is None:
            continue
        if (weight.dtype, weight.shape) != (old_weight.dtype, old_weight.shape):
            return f"weight {name}: {old_weight.text} -> {weight.text}"
        data, old_data = _data(weight.tensor), _data(old_weight.tensor)
        if data is not None and old_data is not None and data != old_data:
            return f"weight {name}: other values"
    if len(node.input) != len(old.input):
        return f"{len(old.input)} -> {len(node.input)} inputs"
    return ""


def _attributes(node: onnx.NodeProto) -> dict[str, bytes]:
    """Attributes by name, serialized; a subgraph stands for itself by its place only."""
    return {
        a.name: b"graph" if a.HasField("g") or len(a.graphs) else a.SerializeToString()
        for a in node.attribute
    }


def _data(tensor: onnx.TensorProto | None) -> bytes | None:
    """A tensor's data as bytes (None for external data, which is not compared)."""
    from onnx import numpy_helper

    if tensor is None or tensor.external_data:
        return None
    if tensor.raw_data:
        return bytes(tensor.raw_data)
    if tensor.string_data:
        return b"\0".join(tensor.string_data)
    return bytes(numpy_helper.to_array(tensor).tobytes())
