"""Changing a converted module before training: a new classification head, frozen layers, and
user blocks that replace a range of nodes.

    head = new_head(module, classes=3, seed=0)   # Head: the Gemm / MatMul(+Add) re-made
    frozen = freeze_until(module, "relu_1")      # weight names frozen (requires_grad False)
    block = replace_block(module, "relu_1", "blocks.py:StraightThroughClip")
    block = replace_block(module, "conv_1..flatten", factory)  # a node range, inclusive

The head is the last Gemm, MatMul+Add or MatMul before the first output (through a Softmax,
LogSoftmax, Identity, Flatten, Reshape, Squeeze or Cast); its weight and bias are replaced by
fresh ones for ``classes`` outputs, initialised like ``nn.Linear``. A Gemm whose weight an old
export reshapes first (the model zoo's GoogLeNet) reads the fresh weight directly.
``freeze_until`` freezes every parameter that feeds a node up to and including the one that
produces the tensor (or the node so named): the whole cone upstream of it.

A replacement factory is called with a ``Block`` (the nodes it replaces, its activation inputs
and outputs, and the replaced weights as tensors; a factory without parameters is called
without) and returns a ``torch.nn.Module`` whose forward takes the inputs positionally and
returns the outputs (a tensor, or a tuple in order). Loading ``FILE.py:NAME`` runs that file:
it is the user's own code, named explicitly.
"""

from __future__ import annotations

import difflib
import inspect
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..customops import python_file
from ..errors import InputError, UsageError, one_line
from ..torchgraph.module import BLOCKS_ATTRIBUTE, Block, Step

_PASS_THROUGH = ("Softmax", "LogSoftmax", "Identity", "Flatten", "Reshape", "Squeeze", "Cast")


@dataclass
class Head:
    """The classification head: the node(s), its weight and bias, and the class counts."""

    nodes: list[str]
    weight: str
    bias: str | None
    classes_before: int
    classes: int
    transposed: bool  # weight is [classes, features] (Gemm transB=1)
    reshaped_by: list[str] = field(default_factory=list)
    """The nodes between the weight and the head (an old export's Reshape of its weight); a
    new head reads its fresh weight directly and they are dropped."""

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def find_head(module: Any) -> Head:
    """The head of the first output (see the module docstring); InputError if there is none."""
    producers = {name: step for step in module.steps for name in step.outputs}
    tensor = module.output_names[0]
    step = producers.get(tensor)
    while step is not None and step.node is not None and step.node.op_type in _PASS_THROUGH:
        step = producers.get(step.inputs[0])
    weights = module.tensor_paths
    head: Head | None = None
    if step is not None and step.node is not None:
        node = step.node
        behind = (
            _weight_behind(step.inputs[1], producers, weights) if node.op_type == "Gemm" else None
        )
        if behind is not None:
            bias = step.inputs[2] if len(step.inputs) > 2 and step.inputs[2] in weights else None
            transposed = bool(node.attr("transB", 0))
            weight, chain = behind
            head = _head([node.label], module, weight, bias, transposed, chain)
        elif node.op_type == "MatMul" and step.inputs[1] in weights:
            head = _head([node.label], module, step.inputs[1], None, False)
        elif node.op_type == "Add":
            bias = next((n for n in step.inputs if n in weights), None)
            other = next((n for n in step.inputs if n != bias), None)
            matmul = producers.get(other) if other else None
            if (
                bias is not None
                and matmul is not None
                and matmul.node is not None
                and matmul.node.op_type == "MatMul"
                and matmul.inputs[1] in weights
            ):
                labels = [matmul.node.label, node.label]
                head = _head(labels, module, matmul.inputs[1], bias, False)
    if head is None:
        raise InputError(
            f"{module.model_name}: no classification head (a Gemm or MatMul(+Add) on a weight) "
            f"produces output {tensor!r}",
            hint="--new-head needs such a head; fine-tune without it, or replace the last "
            "block with --replace",
        )
    return head


_RESHAPES = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity")


def _weight_behind(
    name: str, producers: dict[str, Step], weights: Mapping[str, str]
) -> tuple[str, list[Step]] | None:
    """``name`` when it is a weight; else the weight that a chain of reshapes of it (constant
    shapes) produces ``name`` from, with that chain from the weight outward; None otherwise."""
    chain: list[Step] = []
    while name not in weights:
        step = producers.get(name)
        if step is None or step.node is None or step.node.op_type not in _RESHAPES:
            return None
        if any(n and n not in weights for n in step.inputs[1:]):
            return None
        chain.insert(0, step)
        name = step.inputs[0]
    return name, chain


def _head(
    nodes: list[str],
    module: Any,
    weight: str,
    bias: str | None,
    transposed: bool,
    chain: list[Step] | None = None,
) -> Head:
    shape = tuple(_reshaped(module, weight, chain or []).shape)
    if len(shape) != 2:
        raise InputError(
            f"{module.model_name}: the head weight {weight!r} has shape {list(shape)}, not 2-D",
            hint="--new-head handles Gemm / MatMul heads with a 2-D weight",
        )
    classes = shape[0] if transposed else shape[1]
    reshaped_by = [step.node.label for step in chain or [] if step.node is not None]
    return Head(nodes, weight, bias, classes, classes, transposed, reshaped_by)


def _reshaped(module: Any, weight: str, chain: list[Step]) -> Any:
    """The weight as the head reads it: through ``chain``'s reshapes."""
    from ..torchgraph.ops import OPS

    value = module.parameter(weight)
    for step in chain:
        assert step.node is not None
        xs = [value, *(module.parameter(n) if n else None for n in step.inputs[1:])]
        value = OPS[("", step.node.op_type)](step.node, xs)
    return value


def new_head(module: Any, classes: int, *, seed: int = 0) -> Head:
    """Replace the head's weight and bias with fresh ones for ``classes`` outputs."""
    import torch

    if classes < 2:
        raise UsageError(f"a new head needs at least 2 classes, not {classes}", hint="--new-head 3")
    head = find_head(module)
    old = module.parameter(head.weight)
    if head.reshaped_by:
        old = _read_directly(module, head)
    features = int(old.shape[1] if head.transposed else old.shape[0])
    _check_head_fits(classes, features, old.element_size())
    generator = torch.Generator().manual_seed(seed)
    bound = 1 / math.sqrt(features)  # nn.Linear's initialisation
    weight = (torch.rand(classes, features, generator=generator) * 2 - 1) * bound
    weight = weight.to(old.dtype)
    if not head.transposed:
        weight = weight.t().contiguous()
    module.set_weight(head.weight, torch.nn.Parameter(weight))
    if head.bias is not None:
        bias = (torch.rand(classes, generator=generator) * 2 - 1) * bound
        module.set_weight(head.bias, torch.nn.Parameter(bias.to(old.dtype)))
    head.classes = classes
    return head


def _check_head_fits(classes: int, features: int, itemsize: int) -> None:
    """UsageError when a head of ``classes`` x ``features`` weights would not fit in memory
    while it trains (the weights, their gradients and AdamW's two moments: 4 copies)."""
    from ..report import human_size
    from ..runtime import available_memory

    needed = 4 * classes * features * itemsize
    available = available_memory()
    if available is not None and needed > available:
        raise UsageError(
            f"a new head of {classes} classes over {features} features needs "
            f"{human_size(needed)} to train, more than the {human_size(available)} of memory "
            "available",
            hint="give --new-head the number of classes in your labels",
        )


def _read_directly(module: Any, head: Head) -> Any:
    """Point the head at its weight and drop the reshapes between them (nothing else reads
    them); returns the weight as the head read it, for its shape."""
    steps: list[Step] = module.steps
    by_label = {s.node.label: s for s in steps if s.node is not None}
    chain = [by_label[label] for label in head.reshaped_by]
    reshaped = _reshaped(module, head.weight, chain)
    (gemm,) = [by_label[label] for label in head.nodes]
    made = {n for s in chain for n in s.outputs}
    elsewhere = [s for s in steps if s is not gemm and not any(s is c for c in chain)]
    if any(n in made for s in elsewhere for n in s.inputs) or made & set(module.output_names):
        raise InputError(
            f"{module.model_name}: the head's weight is reshaped by {', '.join(head.reshaped_by)}"
            ", whose output other nodes read too",
            hint="replace the head with your own block (--replace)",
        )
    gemm.inputs[1] = head.weight
    module.steps = [s for s in steps if not any(s is c for c in chain)]
    return reshaped


def freeze_until(module: Any, tensor: str) -> list[str]:
    """Freeze every parameter upstream of ``tensor`` (a tensor or node name), inclusive, the
    parameters of user blocks there too. Returns the frozen weights' ONNX names (a block's as
    ``BLOCK:PARAMETER``)."""
    steps: list[Step] = module.steps
    by_label = {s.node.label: s for s in steps if s.node is not None}
    needed = set(by_label[tensor].outputs) if tensor in by_label else {tensor}
    known = set(module.tensor_names)
    if not needed & known:
        close = difflib.get_close_matches(tensor, [*known, *by_label], n=3)
        raise UsageError(
            f"--freeze-until: {module.model_name} has no tensor or node {tensor!r}",
            hint=f"did you mean {', '.join(close)}?" if close else "see `ferry inspect`",
        )
    frozen = []
    blocks = getattr(module, BLOCKS_ATTRIBUTE)
    for step in reversed(steps):
        if needed & set(step.outputs):
            needed.update(n for n in step.inputs if n)
            if step.block is not None:  # a user block upstream: its own parameters too
                for name, parameter in blocks[step.block].named_parameters():
                    if parameter.requires_grad:
                        parameter.requires_grad_(False)
                        frozen.append(f"{step.block}:{name}")
    for name in module.tensor_paths:
        value = module.parameter(name)
        if name in needed and getattr(value, "requires_grad", False):
            value.requires_grad_(False)
            frozen.append(name)
    return sorted(frozen)


def replace_block(module: Any, spec: str, factory: str | Callable[..., Any]) -> Block:
    """Replace the nodes ``spec`` names (``NODE`` or ``FIRST..LAST``) with the factory's
    module; returns the Block it was told."""
    import torch

    first, _, last = spec.partition("..")
    last = last or first
    labels = [s.node.label if s.node is not None else f"block:{s.block}" for s in module.steps]
    for name in (first, last):
        if name not in labels:
            close = difflib.get_close_matches(name, labels, n=3)
            raise UsageError(
                f"--replace: {module.model_name} has no node {name!r}",
                hint=f"did you mean {', '.join(close)}?" if close else "node names: ferry inspect",
            )
    start, end = labels.index(first), labels.index(last)
    if end < start:
        raise UsageError(
            f"--replace {spec}: {last!r} runs before {first!r}", hint="give FIRST..LAST in order"
        )
    inside = module.steps[start : end + 1]
    produced = {n for s in inside for n in s.outputs}
    weights = set(module.tensor_paths) | set(module.constant_values)
    inputs: list[str] = []
    weight_names: list[str] = []
    for s in inside:
        for n in s.inputs:
            if not n or n in produced:
                continue
            target = weight_names if n in weights else inputs
            if n not in target:
                target.append(n)
    later = {n for s in module.steps[end + 1 :] for n in s.inputs} | set(module.output_names)
    outputs = [n for s in inside for n in s.outputs if n and n in later]
    name = re.sub(r"\W", "_", first) or "block"
    blocks = getattr(module, BLOCKS_ATTRIBUTE)
    while name in blocks:
        name += "_"
    block = Block(
        name,
        list(labels[start : end + 1]),
        inputs,
        outputs,
        {n: module.parameter(n) for n in weight_names if n in module.tensor_paths},
    )
    made = _call(load_factory(factory) if isinstance(factory, str) else factory, block, spec)
    if not isinstance(made, torch.nn.Module):
        raise InputError(
            f"--replace {spec}: the factory returned a {type(made).__name__}, not a "
            "torch.nn.Module",
            hint="return a module whose forward takes the block's inputs",
        )
    blocks[name] = made
    module.steps[start : end + 1] = [Step(inputs, outputs, block=name)]
    return block


def _call(factory: Callable[..., Any], block: Block, spec: str) -> Any:
    try:
        takes = len(inspect.signature(factory).parameters) > 0
    except (TypeError, ValueError):
        takes = True
    try:
        return factory(block) if takes else factory()
    except Exception as e:
        raise InputError(
            f"--replace {spec}: the factory raised {one_line(e, 200, named=True)}",
            hint="fix the factory; it is called with the Block it replaces",
        ) from e


def load_factory(spec: str) -> Callable[..., Any]:
    """``FILE.py:NAME`` -> the callable NAME defined in FILE (the file is run: user code)."""
    file_text, _, attr = spec.rpartition(":")
    file = Path(file_text)
    if not file_text.endswith(".py") or not attr.isidentifier():
        raise UsageError(
            f"--replace: {spec!r} is not FILE.py:NAME", hint="e.g. --replace relu_1=blocks.py:Clip"
        )
    with python_file(file, what="the --replace module") as code:
        factory = getattr(code, attr, None)
    if not callable(factory):
        raise InputError(f"{file} defines no callable {attr!r}", hint="name a class or function")
    return factory  # type: ignore[no-any-return]
