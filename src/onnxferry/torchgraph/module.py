"""An ONNX model as a trainable ``torch.nn.Module``, checked against ONNX Runtime.

    module = to_torch("model.onnx")              # parity vs ONNX Runtime checked (fails hard)
    module.parity.max_abs                        # the figures of that check
    outputs = module(x=torch.randn(4, 1, 8, 8))  # {output name: tensor}, by input name
    logits = module(torch.randn(4, 1, 8, 8))["logits"]  # or by position, in input order
    module.parameter("fc.weight")                # the nn.Parameter of that initializer
    module.tensor_names                          # every ONNX tensor name the graph uses
    module.tensors({"x": torch.randn(2, 1, 8, 8)}, ["relu_1"])  # an intermediate tensor

Float initializers with more than one element become ``nn.Parameter``s; so do weights held in
``Constant`` nodes (and in ``ConstantOfShape`` of a constant shape), and quantized weights
through their ``DequantizeLinear``, folded once here. Scalars, integer tensors,
BatchNormalization's running statistics and quantization scales become buffers. Parameters keep
the initializer's name as their path where it can be a torch attribute path (``fc.weight``
stays ``fc.weight``, so a re-export writes the same names); other characters become ``_``.
Nodes run in the graph's (topological) order through ``ops.OPS``; an ``If`` runs the branch its
condition picks, a ``Loop`` or ``Scan`` its body as many times as it says (their graphs'
weights are parameters like the others; tracing one is refused, as a trace would keep one path).
An operator missing there is one line naming it, its domain and its opset
(UnsupportedOperator, exit 2).

The module is built lazily (torch is imported by the first call), and ``Block``s let a user
replace a range of nodes with their own module (``replace_block``).
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, VerificationError, one_line
from ..model import Model
from ..parity import Parity, Tolerance, compare_within_noise, unoptimized_ort
from ..unfused import with_unfused
from .ops import OPS, Node, UnsupportedOp, supported_ops

TRAINABLE_MIN_ELEMENTS = 2
"""Float constants with at least this many elements become parameters (scalars: buffers)."""

_STATISTICS = {"BatchNormalization": (3, 4), "DequantizeLinear": (1, 2), "QuantizeLinear": (1, 2)}
"""Inputs that hold statistics, not weights: kept as buffers (a quantized weight's scale and
zero point, so its DequantizeLinear folds into one float parameter)."""

BLOCKS_ATTRIBUTE = "ferry_blocks"
"""The attribute that holds replacement blocks (kept apart from the weights' paths)."""


class UnsupportedOperator(InputError):
    """The graph holds an operator the torch converter does not translate (exit 2)."""


@dataclass
class Block:
    """A user's module standing in for a range of nodes; what its factory is told.

    ``nodes``: the names of the nodes it replaces; ``inputs``: the activations it receives
    (positionally, in this order); ``outputs``: what its forward returns (a tensor, or a tuple
    in this order); ``weights``: the replaced nodes' float weights by ONNX name (tensors).
    """

    name: str
    nodes: list[str]
    inputs: list[str]
    outputs: list[str]
    weights: dict[str, Any] = field(default_factory=dict)


@dataclass
class Branch:
    """A graph a node holds (an ``If``'s branch, a ``Loop``'s or ``Scan``'s body): its steps,
    the names it takes (a body's inputs, bound each time it runs) and hands back."""

    steps: list[Step]
    outputs: list[str]
    inputs: list[str] = field(default_factory=list)


@dataclass
class Step:
    """One thing forward does: run an ONNX node, a replacement block, or a node that holds
    graphs (``branches``: an ``If``'s then and else, a ``Loop``'s or ``Scan``'s body), run
    when forward runs."""

    inputs: list[str]
    outputs: list[str]
    node: Node | None = None
    block: str | None = None
    branches: tuple[Branch, ...] | None = None


def to_torch(
    model: Model | str | Path,
    *,
    check: bool = True,
    feeds: Sequence[Mapping[str, np.ndarray]] = (),
    tolerance: Tolerance | None = None,
) -> Any:
    """``model`` as an ``OnnxModule`` (a ``torch.nn.Module``) in eval mode.

    With ``check`` (the default), the module runs against ONNX Runtime on ``feeds`` (or on the
    feeds every verb generates) right away; ``module.parity`` holds the figures, and a
    mismatch raises VerificationError (exit 1). UnsupportedOperator (exit 2) names the first
    operator the converter lacks. ONNX Runtime's fused transformer operators are translated
    as the standard ones they stand for (``unfused``), and checked against the original.
    """
    model = model if isinstance(model, Model) else Model.load(model)
    translated, _ = with_unfused(model)  # ONNX Runtime's fused operators, as standard ops
    module = module_class()(translated)
    module.eval()
    if check:
        try:
            module.parity = check_parity(module, model, feeds, tolerance)
        except UnsupportedOp as e:
            raise _unsupported(e.node, model.name, e.detail) from e
        if not module.parity.ok:
            raise VerificationError(
                f"the torch module converted from {model.name} differs from ONNX Runtime: "
                f"{module.parity.summary()}",
                hint="report the model's operators to onnxferry; replace the block that "
                "differs with --replace",
            )
    return module


def embedding_of(module: Any, input_name: str) -> str | None:
    """The output of the embedding lookup that reads integer input ``input_name`` (a Gather
    from a float weight table, the ids given directly or through a Cast), or None."""
    sources = {input_name}
    for step in module.steps:
        node = step.node
        if node is None or step.branches is not None:
            continue
        if node.op_type == "Cast" and node.inputs[0] in sources:
            sources.add(node.outputs[0])
        elif node.op_type == "Gather" and node.inputs[1] in sources:
            table = module.tensor_paths.get(node.inputs[0])
            if table is not None and module.get_submodule_tensor(table).is_floating_point():
                return str(node.outputs[0])
    return None


def refuse_branches(module: Any, why: str) -> None:
    """UnsupportedOperator naming the module's first If, Loop or Scan (``why``: what needs a
    trace, which would keep only the path it took)."""
    for step in module.steps:
        if step.branches is not None and step.node is not None:
            raise _unsupported(step.node, module.model_name, f"for {why}")


def check_parity(
    module: Any,
    model: Model,
    feeds: Sequence[Mapping[str, np.ndarray]] = (),
    tolerance: Tolerance | None = None,
) -> Parity:
    """The module's outputs against ONNX Runtime's on ``feeds`` (default: generated), within
    ONNX Runtime's own noise (``parity.compare_within_noise``: its int8 kernels saturate on a
    CPU without VNNI, where the unfused graph, as torch runs it, does not)."""
    from ..feeds import verification_feeds
    from ..runtime import OrtRunner

    sets = [dict(f) for f in feeds] or verification_feeds(model)
    runner = OrtRunner(model)
    references = [runner.run(f) for f in sets]
    candidates = [run_module(module, f) for f in sets]
    return compare_within_noise(
        references,
        candidates,
        tolerance or Tolerance(),
        second=unoptimized_ort(model, sets),
        reference_name=runner.name,
        candidate_name=f"torch:{model.name}",
    )


def run_module(module: Any, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the module on numpy feeds without gradients; numpy outputs by name."""
    import torch

    with torch.no_grad():
        tensors = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in feeds.items()}
        outputs = module(**tensors)
    return {k: v.detach().cpu().numpy() for k, v in outputs.items()}


@functools.cache
def module_class() -> type:
    """The ``OnnxModule`` class (built on first use, so importing this module needs no torch)."""
    import torch

    class OnnxModule(torch.nn.Module):
        """An ONNX graph evaluated node by node in torch; see the module docstring."""

        def __init__(self, model: Model) -> None:
            super().__init__()
            self.model_name = model.name
            self.input_names, self.output_names = _graph_io(model)
            self.input_dtypes = {s.name: s.dtype.numpy for s in model.signature.inputs}
            self.input_specs = {s.name: s for s in model.signature.inputs}
            self.steps: list[Step] = []
            self.parity: Parity | None = None
            self.tensor_paths: dict[str, str] = {}  # ONNX name -> parameter or buffer path
            self.constant_values: dict[str, Any] = {}  # folded, not registered (none by default)
            setattr(self, BLOCKS_ATTRIBUTE, torch.nn.ModuleDict())
            _build(self, model)

        @property
        def tensor_names(self) -> list[str]:
            names = {*self.input_names, *self.tensor_paths}
            for step in self.steps:
                names.update(step.outputs)
            return sorted(names)

        def parameter(self, name: str) -> Any:
            """The parameter (or buffer) holding the ONNX tensor ``name``."""
            path = self.tensor_paths.get(name)
            if path is None:
                raise InputError(
                    f"{name!r} is not a weight of {self.model_name}",
                    hint="weights: " + ", ".join(list(self.tensor_paths)[:8]),
                )
            return self.get_submodule_tensor(path)

        def get_submodule_tensor(self, path: str) -> Any:
            owner, _, leaf = path.rpartition(".")
            holder = self.get_submodule(owner) if owner else self
            return getattr(holder, leaf)

        def set_weight(self, name: str, value: Any) -> None:
            """Replace the tensor of weight ``name`` (e.g. a new head of another size)."""
            owner, _, leaf = self.tensor_paths[name].rpartition(".")
            holder = self.get_submodule(owner) if owner else self
            delattr(holder, leaf)
            if isinstance(value, torch.nn.Parameter):
                holder.register_parameter(leaf, value)
            else:
                holder.register_buffer(leaf, value)

        def forward(self, *args: Any, **feeds: Any) -> dict[str, Any]:
            given: dict[str, Any] = dict(zip(self.input_names, args, strict=False))
            given.update(feeds)
            return self.tensors(given, self.output_names)

        def tensors(
            self,
            feeds: Mapping[str, Any],
            names: Sequence[str],
            overrides: Mapping[str, Any] | None = None,
        ) -> dict[str, Any]:
            """The tensors ``names`` (outputs or intermediates) for ``feeds``, by input name;
            evaluation stops once they are all computed. ``overrides`` stand in for
            intermediates (the nodes that make them do not run): an embedding lookup's output
            given, to take gradients along it."""
            values: dict[str, Any] = dict(feeds)
            missing = [n for n in self.input_names if n not in values]
            if missing:
                raise InputError(
                    f"{self.model_name} needs input {missing[0]!r}",
                    hint=f"its inputs are {', '.join(self.input_names)}",
                )
            for name, path in self.tensor_paths.items():
                values[name] = self.get_submodule_tensor(path)
            values.update(self.constant_values)
            values.update(overrides or {})
            self._run(self.steps, values, set(names) - set(values), set(overrides or ()))
            return {name: values[name] for name in names}

        def _run(
            self,
            steps: Sequence[Step],
            values: dict[str, Any],
            wanted: set[str],
            given: set[str] | None = None,
        ) -> None:
            """Run ``steps`` on ``values`` (filled in place) until ``wanted`` are computed;
            a step whose outputs are all ``given`` is skipped."""
            blocks = getattr(self, BLOCKS_ATTRIBUTE)
            for step in steps:
                if not wanted:
                    break
                if given and all(o in given for o in step.outputs if o):
                    continue
                xs = [values[n] if n else None for n in step.inputs]
                if step.node is None:
                    result = blocks[step.block](*xs)
                else:
                    result = self._node(step, xs, values)
                if not isinstance(result, (tuple, list)):
                    result = (result,)
                for name, value in zip(step.outputs, result, strict=False):
                    if name:
                        values[name] = value
                        wanted.discard(name)

        def _node(self, step: Step, xs: list[Any], values: Mapping[str, Any]) -> Any:
            """One node's outputs; torch failing on it is UnsupportedOperator (exit 2) naming
            the node (a variant the translation gets wrong), not a bare IndexError."""
            node = step.node
            assert node is not None
            try:
                if step.branches is not None:
                    return self._control(step, xs, values)
                return OPS[(_domain(node), node.op_type)](node, xs)
            except UnsupportedOperator:  # from a node inside a branch or body
                raise
            except UnsupportedOp as e:
                raise _unsupported(e.node, self.model_name, e.detail) from e
            except Exception as e:  # torch raises anything on inputs a translation mishandles
                failed = one_line(e, 160, line="first", named=True)
                raise _unsupported(node, self.model_name, f"(torch failed: {failed})") from e

        def _control(self, step: Step, xs: list[Any], values: Mapping[str, Any]) -> list[Any]:
            """An If, Loop or Scan, run on the outer scope's values. A trace would keep one
            branch, or one count of iterations, so tracing one is refused."""
            node, branches = step.node, step.branches
            assert node is not None and branches is not None
            jit: Any = torch.jit  # its stubs leave is_tracing untyped
            if jit.is_tracing():
                raise UnsupportedOp(node, "under tracing (an export would keep one path)")
            if node.op_type == "If":
                branch = branches[0] if bool(xs[0].reshape(-1)[0]) else branches[1]
                return self._body(branch, [], values)
            if node.op_type == "Loop":
                return self._loop(node, branches[0], xs, values)
            return self._scan(node, branches[0], xs, values)

        def _body(self, body: Branch, given: Sequence[Any], values: Mapping[str, Any]) -> list[Any]:
            """``body``'s outputs, its inputs bound to ``given``, in the outer scope."""
            scope = dict(values)
            scope.update(zip(body.inputs, given, strict=True))
            self._run(body.steps, scope, set(body.outputs) - set(scope))
            return [scope[name] for name in body.outputs]

        def _loop(self, node: Node, body: Branch, xs: list[Any], values: Any) -> list[Any]:
            trips = int(xs[0].reshape(-1)[0]) if xs[0] is not None else None
            going = bool(xs[1].reshape(-1)[0]) if len(xs) > 1 and xs[1] is not None else True
            carried = list(xs[2:])
            scanned: list[list[Any]] = [[] for _ in body.outputs[1 + len(carried) :]]
            count = 0
            while going and (trips is None or count < trips):
                index = torch.tensor(count, dtype=torch.int64)
                out = self._body(body, [index, torch.tensor(going), *carried], values)
                going = bool(out[0].reshape(-1)[0])
                carried = out[1 : 1 + len(carried)]
                for collected, value in zip(scanned, out[1 + len(carried) :], strict=True):
                    collected.append(value)
                count += 1
            if any(not c for c in scanned):
                raise UnsupportedOp(node, "that ran no iteration (its scan outputs' shapes)")
            return [*carried, *(torch.stack(c) for c in scanned)]

        def _scan(self, node: Node, body: Branch, xs: list[Any], values: Any) -> list[Any]:
            if node.opset < 9:
                raise UnsupportedOp(node, "before opset 9 (a batch axis and sequence_lens)")
            count = int(node.attr("num_scan_inputs"))
            states, sequences = list(xs[: len(xs) - count]), xs[len(xs) - count :]
            in_axes = [
                a % s.dim()
                for a, s in zip(_scan_attr(node, "input_axes", count, 0), sequences, strict=True)
            ]
            backward = _scan_attr(node, "input_directions", count, 0)
            length = int(sequences[0].shape[in_axes[0]])
            produced = len(body.outputs) - len(states)
            scanned: list[list[Any]] = [[] for _ in range(produced)]
            for t in range(length):
                slices = [
                    s.select(a, length - 1 - t if b else t)
                    for s, a, b in zip(sequences, in_axes, backward, strict=True)
                ]
                out = self._body(body, [*states, *slices], values)
                states = out[: len(states)]
                for collected, value in zip(scanned, out[len(states) :], strict=True):
                    collected.append(value)
            results = []
            out_axes = _scan_attr(node, "output_axes", produced, 0)
            for collected, axis, back in zip(
                scanned, out_axes, _scan_attr(node, "output_directions", produced, 0), strict=True
            ):
                ordered = collected[::-1] if back else collected
                results.append(torch.stack(ordered, dim=axis % (ordered[0].dim() + 1)))
            return [*states, *results]

    return OnnxModule


# --- building ---------------------------------------------------------------------------------


def _graph_io(model: Model) -> tuple[list[str], list[str]]:
    graph = model.proto.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [v.name for v in graph.input if v.name not in initializers]
    return inputs, [v.name for v in graph.output]


def _opsets(model: Model) -> dict[str, int]:
    return {
        ("" if o.domain in ("", "ai.onnx") else o.domain): o.version
        for o in model.proto.opset_import
    }


def _domain(node: Node) -> str:
    return "" if node.domain in ("", "ai.onnx") else node.domain


def _decode(proto: Any, opset: int) -> Node:
    from onnx import AttributeProto, helper, numpy_helper

    attrs: dict[str, Any] = {}
    for a in proto.attribute:
        value = helper.get_attribute_value(a)  # a GraphProto for control flow's bodies
        if a.type == AttributeProto.TENSOR:
            value = numpy_helper.to_array(value)
        elif isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, list) and value and isinstance(value[0], bytes):
            value = [v.decode() for v in value]
        attrs[a.name] = value
    return Node(
        proto.op_type,
        proto.domain,
        proto.name,
        list(proto.input),
        list(proto.output),
        opset,
        attrs,
    )


def _batch_one_rows(proto: Any) -> set[str]:
    """In a batch-1 export (every input's leading dim is a fixed 1), the tensors whose leading
    dim is that batch of 1 by shape inference: a Reshape of one to a fixed ``[1, ...]`` (a
    channel shuffle, a flatten) keeps the rows of a larger training batch instead."""
    import onnx

    graph = proto.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]
    dims = [v.type.tensor_type.shape.dim for v in inputs]
    if not inputs or not all(len(d) > 1 and d[0].dim_value == 1 for d in dims):
        return set()
    try:
        typed = onnx.shape_inference.infer_shapes(proto)
    except (onnx.shape_inference.InferenceError, ValueError):  # shapes unknown: none kept
        return set()
    known = [*typed.graph.input, *typed.graph.value_info]
    return {
        v.name
        for v in known
        if v.type.tensor_type.shape.dim and v.type.tensor_type.shape.dim[0].dim_value == 1
    }


def _build(module: Any, model: Model) -> None:
    """Fold constant nodes, register weights, and list the steps forward runs."""
    import torch

    from ..graphs import inlined

    proto = inlined(model)
    planner = _Planner(model, _opsets(model), _batch_one_rows(proto))
    nodes = planner.decode(proto.graph)
    module.steps = planner.plan(nodes)
    used = _used(module.steps) | set(module.output_names)
    constants, trainable_sources = planner.constants, planner.trainable or set()
    paths = _Paths(module)
    for name, array in constants.items():
        if name not in used or name in module.input_names:
            continue
        tensor = torch.from_numpy(np.array(array, copy=True))
        if name in trainable_sources:
            value: Any = torch.nn.Parameter(tensor)
        else:
            value = tensor
        module.tensor_paths[name] = paths.register(name, value)


class _Planner:
    """Decodes a graph's nodes (the graphs an If, Loop or Scan holds too, their weights with
    the others') and plans their steps: constants folded, shape inputs marked."""

    def __init__(self, model: Model, opsets: Mapping[str, int], batch_rows: set[str]) -> None:
        self.model = model
        self.opsets = opsets
        self.batch_rows = batch_rows
        self.constants: dict[str, np.ndarray] = {}
        self.statistics: set[str] = set()
        self.trainable: set[str] | None = None

    def decode(self, graph: Any) -> list[Node]:
        from onnx import numpy_helper

        self.constants.update({t.name: numpy_helper.to_array(t) for t in graph.initializer})
        nodes: list[Node] = []
        for p in graph.node:
            node = _decode(p, self.opsets.get("" if p.domain in ("", "ai.onnx") else p.domain, 0))
            if node.op_type in CONTROL_FLOW and _domain(node) == "":
                bodies = [node.attrs.pop(k) for k in CONTROL_FLOW[node.op_type]]
                node.attrs["_branches"] = [
                    Branch([], [v.name for v in body.output], [v.name for v in body.input])
                    for body in bodies
                ]
                node.attrs["_nodes"] = [self.decode(body) for body in bodies]
            elif (_domain(node), node.op_type) not in OPS:
                raise _unsupported(node, self.model.name)
            for index in _STATISTICS.get(node.op_type, ()):
                if index < len(node.inputs):
                    self.statistics.add(node.inputs[index])
            nodes.append(node)
        return nodes

    def plan(self, nodes: list[Node]) -> list[Step]:
        constants, statistics = self.constants, self.statistics
        if self.trainable is None:
            self.trainable = {n for n, a in constants.items() if _trainable(a, n, statistics)}
        trainable = self.trainable
        steps: list[Step] = []
        for node in nodes:
            branches = node.attrs.pop("_branches", None)
            if branches is not None:
                for branch, body in zip(branches, node.attrs.pop("_nodes"), strict=True):
                    branch.steps = self.plan(body)
                steps.append(
                    Step(list(node.inputs), list(node.outputs), node, None, tuple(branches))
                )
                continue
            if all(not n or (n in constants and n not in trainable) for n in node.inputs):
                folded = _fold(node, constants, self.model)
                if folded is not None:
                    constants.update(folded)
                    trainable.update(n for n, a in folded.items() if _trainable(a, n, statistics))
                    continue
            shaping = node.op_type in ("Reshape", "Expand") and len(node.inputs) > 1
            if shaping and node.inputs[1] not in constants:
                node.attrs["_dynamic_shape"] = True
            elif node.op_type == "Reshape" and node.inputs[0] in self.batch_rows:
                node.attrs["_batch_one"] = True
            steps.append(Step(list(node.inputs), list(node.outputs), node=node))
        return steps


CONTROL_FLOW = {"If": ("then_branch", "else_branch"), "Loop": ("body",), "Scan": ("body",)}
"""Operators that hold graphs, and the attributes that hold them: ``OnnxModule`` runs them."""


def _scan_attr(node: Node, name: str, count: int, default: int) -> list[int]:
    """A Scan's per-input or per-output list attribute (``scan_input_axes``, ...)."""
    return [int(v) for v in node.attr(f"scan_{name}", [default] * count)]


def _used(steps: Sequence[Step]) -> set[str]:
    """Every name the steps read, inside branches too (a branch may hand back a weight)."""
    names: set[str] = set()
    for step in steps:
        names.update(step.inputs)
        for branch in step.branches or ():
            names |= _used(branch.steps) | set(branch.outputs)
    return names


def _trainable(array: np.ndarray, name: str, statistics: set[str]) -> bool:
    return (
        np.issubdtype(array.dtype, np.floating)
        and array.size >= TRAINABLE_MIN_ELEMENTS
        and name not in statistics
    )


def _fold(
    node: Node, constants: Mapping[str, np.ndarray], model: Model
) -> dict[str, np.ndarray] | None:
    """The node's outputs when all its inputs are constants (None if it cannot run here)."""
    import torch

    xs = [torch.from_numpy(np.array(constants[n], copy=True)) if n else None for n in node.inputs]
    try:
        result = OPS[(_domain(node), node.op_type)](node, xs)
    except UnsupportedOp as e:
        raise _unsupported(node, model.name, e.detail) from e
    except Exception:  # e.g. a Shape of a constant with an odd dtype: run it in forward
        return None
    results = result if isinstance(result, (tuple, list)) else (result,)
    return {n: r.numpy() for n, r in zip(node.outputs, results, strict=False) if n}


def _unsupported(node: Node, model_name: str, detail: str = "") -> UnsupportedOperator:
    domain = node.domain or "ai.onnx"
    what = f"{node.op_type} {detail}".strip()
    return UnsupportedOperator(
        f"{model_name}: operator {what} (domain {domain}, opset {node.opset}, node "
        f"{node.label!r}) has no torch translation",
        hint="replace the block that holds it with your own module (--replace "
        f"{node.label}=module.py:Factory); supported: {len(supported_ops())} ai.onnx operators",
    )


class _Paths:
    """Attribute paths for ONNX tensor names: ``fc.weight`` as submodule ``fc``, leaf
    ``weight``; a name that cannot be one (a clash, an empty part) gets a flat safe name."""

    def __init__(self, root: Any) -> None:
        self.root = root
        self.taken: set[str] = {BLOCKS_ATTRIBUTE}

    def register(self, name: str, value: Any) -> str:
        parts = [re.sub(r"\W", "_", p) for p in name.split(".")]
        parts = [("t_" + p if p[:1].isdigit() else p) for p in parts]
        path = ".".join(parts)
        if all(parts) and self._fits(parts):
            self._place(parts, value)
        else:
            flat = re.sub(r"\W", "_", name) or "tensor"
            flat = "t_" + flat if flat[0].isdigit() else flat
            candidate, i = flat, 1
            while hasattr(self.root, candidate) or candidate in self.taken:
                candidate, i = f"{flat}_{i}", i + 1
            path = candidate
            self._place([candidate], value)
        self.taken.add(path)
        return path

    def _fits(self, parts: list[str]) -> bool:
        import torch

        holder = self.root
        for part in parts[:-1]:
            if not hasattr(holder, part):
                return True  # the rest is created fresh
            holder = getattr(holder, part)
            if type(holder) is not torch.nn.Module:  # only the plain holders made here
                return False
        return not hasattr(holder, parts[-1])

    def _place(self, parts: list[str], value: Any) -> None:
        import torch

        holder = self.root
        for part in parts[:-1]:
            child = getattr(holder, part, None)
            if child is None:
                child = torch.nn.Module()
                holder.add_module(part, child)
            holder = child
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if isinstance(value, torch.nn.Parameter):
                holder.register_parameter(parts[-1], value)
            else:
                holder.register_buffer(parts[-1], value)
