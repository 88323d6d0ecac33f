"""The onnxslim passes: ``slim`` (fold, fuse, eliminate) and ``fold`` (constants folded, dead
nodes removed, no fusions).

    ctx = PassContext(workdir, feeds)
    Slim().apply(model, ctx)                       # onnxslim: fold, fuse, eliminate
    result = Fold().apply(model, ctx)              # constants folded, dead nodes removed
    result.model, result.changed, result.notes

Both run onnxslim (imported when a pass runs) on an inlined copy of the model, keep its input
and output names, and save the result under ``ctx.scratch(name)`` with ``save_output``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ..errors import one_line
from ..graphs import inlined, iter_initializers, keep_io_shapes
from ..model import Model
from .base import Pass, PassContext, PassError, PassResult, param
from .output import graph_key, node_count, save_output

if TYPE_CHECKING:
    import onnx

SlimStep = Literal[
    "constant_folding",
    "graph_fusion",
    "dead_node_elimination",
    "subexpression_elimination",
    "weight_tying",
]
"""onnxslim's optimization steps, as its ``skip_optimizations`` names them."""


@dataclass(frozen=True)
class Slim(Pass):
    """Simplify the graph with onnxslim: constants folded, patterns fused, dead code removed.

    onnxslim folds constants, fuses patterns (Conv+BN, MatMul+Add -> Gemm ...), removes no-op
    and dead nodes, merges common subexpressions and ties equal weights. The output is standard
    ONNX, runtime-independent; input and output names are kept.
    """

    name: ClassVar[str] = "slim"
    family: ClassVar[str] = "graph"
    skip_fusion_patterns: Sequence[str] = param(
        (), "onnxslim fusion patterns to skip, e.g. FusionConvBN, FusionGemm"
    )
    skip_optimizations: Sequence[SlimStep] = param(
        (),
        "onnxslim steps to skip: constant_folding, graph_fusion, dead_node_elimination, "
        "subexpression_elimination, weight_tying",
    )
    no_shape_infer: bool = param(False, "skip onnxslim's shape inference between rounds")
    size_threshold: int | None = param(
        None, "constants larger than this many bytes are not folded (None: fold all)"
    )

    def __post_init__(self) -> None:
        _check_fusion_patterns(self.name, self.skip_fusion_patterns)

    def apply(self, model: Model, ctx: PassContext) -> PassResult:
        options: dict[str, Any] = {
            "skip_fusion_patterns": list(self.skip_fusion_patterns) or None,
            "skip_optimizations": list(self.skip_optimizations) or None,
            "no_shape_infer": self.no_shape_infer,
            "size_threshold": self.size_threshold,
        }
        return _slim(self.name, model, ctx, options)


@dataclass(frozen=True)
class Fold(Pass):
    """Fold constant subgraphs into initializers and remove dead and no-op nodes.

    This is onnxslim's constant folding and dead node elimination, without its fusions: the
    output is standard ONNX with the same input and output names.
    """

    name: ClassVar[str] = "fold"
    family: ClassVar[str] = "graph"
    size_threshold: int | None = param(
        None, "constants larger than this many bytes are not folded (None: fold all)"
    )

    def apply(self, model: Model, ctx: PassContext) -> PassResult:
        options: dict[str, Any] = {
            "skip_optimizations": ["graph_fusion", "subexpression_elimination", "weight_tying"],
            "size_threshold": self.size_threshold,
        }
        return _slim(self.name, model, ctx, options)


def _check_fusion_patterns(pass_name: str, names: Sequence[str]) -> None:
    """UsageError for a fusion pattern this onnxslim does not know (skipped when onnxslim is
    not installed: the pass then fails when it runs)."""
    if not names:
        return
    from ..errors import UsageError

    try:
        from onnxslim.core.pattern.registry import DEFAULT_FUSION_PATTERNS
    except ImportError:
        return
    unknown = [n for n in names if n not in DEFAULT_FUSION_PATTERNS]
    if unknown:
        raise UsageError(
            f"pass {pass_name!r}: unknown onnxslim fusion pattern(s) {', '.join(unknown)}",
            hint=f"known patterns: {', '.join(DEFAULT_FUSION_PATTERNS)}",
        )


def _slim(pass_name: str, model: Model, ctx: PassContext, options: dict[str, Any]) -> PassResult:
    """Run onnxslim on a copy of the model and save the result."""
    try:
        import onnxslim
    except ImportError as e:
        raise PassError(
            f"{pass_name}: onnxslim is not installed",
            hint="pip install 'onnxferry[optimize]'",
        ) from e
    proto = inlined(model)  # onnxslim rewrites tensors: it needs their data
    try:
        slimmed = onnxslim.slim(proto, **options)
    except Exception as e:
        raise PassError(
            f"{pass_name}: onnxslim cannot simplify the model: {one_line(e)}",
            hint=f"leave {pass_name} out of the recipe for this model",
        ) from e
    del proto
    before = model.signature
    names = (
        [i.name for i in slimmed.graph.input if i.name not in _initializer_names(slimmed)],
        [o.name for o in slimmed.graph.output],
    )
    wanted = ([s.name for s in before.inputs], [s.name for s in before.outputs])
    if names != wanted:
        raise PassError(
            f"{pass_name}: onnxslim changed the model's inputs or outputs "
            f"({wanted[0]} -> {wanted[1]} became {names[0]} -> {names[1]})",
            hint=f"leave {pass_name} out of the recipe for this model",
        )
    keep_io_shapes(slimmed, model.proto)
    result = save_output(pass_name, slimmed, model, ctx)
    nodes_before, nodes_after = node_count(model.proto), node_count(result.proto)
    details = {
        "onnxslim": onnxslim.__version__,
        "nodes_before": nodes_before,
        "nodes_after": nodes_after,
        "initializers_before": _initializer_count(model.proto),
        "initializers_after": _initializer_count(result.proto),
    }
    notes = [f"onnxslim {onnxslim.__version__}: {nodes_before} -> {nodes_after} nodes"]
    changed = graph_key(model.proto) != graph_key(result.proto)
    return PassResult(result, changed, notes, details)


def _initializer_names(proto: onnx.ModelProto) -> set[str]:
    return {t.name for t in proto.graph.initializer}


def _initializer_count(proto: onnx.ModelProto) -> int:
    return sum(1 for _ in iter_initializers(proto))
