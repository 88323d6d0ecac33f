"""Graph passes: ONNX Runtime's offline optimizer, onnxslim, and constant folding.

    ctx = PassContext(workdir, feeds)
    OrtGraph(level="extended").apply(model, ctx)   # ORT's fusions, saved offline
    Slim().apply(model, ctx)                       # onnxslim: fold, fuse, eliminate
    result = Fold().apply(model, ctx)              # constants folded, dead nodes removed
    result.model, result.changed, result.notes

Each pass writes its output under ``ctx.scratch(name)`` and leaves the input model as it was.
A model with external data keeps its weights in external data (``model.data``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ..errors import ModelLoadError
from ..model import Model, iter_graphs, iter_nodes
from ..runtime import (
    SessionConfig,
    ort_error_message,
    provider_name,
    session_options,
    short_provider_name,
    version_problem,
)
from .base import Pass, PassContext, PassError, PassResult, param, register

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

_EXTERNAL_PAST = 1024**3
"""Models larger than this (bytes) get their optimized weights in external data."""

_ORT_EXTERNAL_FILE = "session.optimized_model_external_initializers_file_name"
_ORT_EXTERNAL_MIN = "session.optimized_model_external_initializers_min_size_in_bytes"


@register
@dataclass(frozen=True)
class OrtGraph(Pass):
    """Optimize the graph with ONNX Runtime and save the result (offline optimization).

    "basic" folds constants and removes redundant nodes, keeping standard ONNX ops;
    "extended" also fuses (Conv+Activation, MatMul+Add -> Gemm ...) into onnxruntime's
    contrib ops (com.microsoft), which only onnxruntime runs, on the provider it was made for;
    "layout" adds layout changes (NCHWc on cpu) tied to this machine's instruction set.
    The optimization runs on ``ctx.provider`` (cpu when onnxruntime lacks it).
    """

    name: ClassVar[str] = "ort_graph"
    family: ClassVar[str] = "graph"
    level: Literal["basic", "extended", "layout"] = param(
        "extended", "onnxruntime's graph optimization level: basic, extended or layout"
    )

    def apply(self, model: Model, ctx: PassContext) -> PassResult:
        import onnxruntime as ort

        notes: list[str] = []
        wanted = provider_name(ctx.provider)
        cpu = "CPUExecutionProvider"
        providers = [wanted] if wanted == cpu else [wanted, cpu]
        if wanted not in ort.get_available_providers():
            notes.append(
                f"provider {ctx.provider!r} is not in this onnxruntime build: optimized for cpu"
            )
            providers = [cpu]
        target = ctx.scratch(self.name)
        opts = session_options(SessionConfig(graph_optimization=self.level))
        opts.optimized_model_filepath = str(target)
        if model.external_files or model.size_bytes > _EXTERNAL_PAST:
            opts.add_session_config_entry(_ORT_EXTERNAL_FILE, f"{target.stem}.data")
            opts.add_session_config_entry(_ORT_EXTERNAL_MIN, "1024")
        source = str(model.path) if model.path is not None else model.proto.SerializeToString()
        try:
            ort.InferenceSession(source, sess_options=opts, providers=providers)
        except Exception as e:
            reason = version_problem(model.ir_version, model.opset_imports)
            raise PassError(
                f"{self.name}: onnxruntime cannot load the model: {reason or ort_error_message(e)}",
                hint="run `ferry check` on the model; ort_graph needs a model onnxruntime runs",
            ) from e
        optimized = _load_output(self.name, target)
        provider = short_provider_name(providers[0])
        contrib = sorted(
            {
                f"{n.domain}::{n.op_type}"
                for n in iter_nodes(optimized.proto)
                if n.domain.startswith("com.microsoft")
            }
        )
        notes.append(
            f"optimized offline by onnxruntime {ort.__version__} at level {self.level!r} "
            f"for {provider}"
        )
        if self.level != "basic":
            notes.append(
                f"level {self.level!r} output is tied to onnxruntime and the {provider} provider"
                + (f"; it holds onnxruntime-only ops: {', '.join(contrib)}" if contrib else "")
                + "; other runtimes may not load it"
            )
        if self.level == "layout":
            notes.append(
                "layout optimizations depend on this machine's hardware (e.g. NCHWc on cpu): "
                "run the model on the same kind of machine"
            )
        details = {
            "level": self.level,
            "provider": provider,
            "onnxruntime": ort.__version__,
            "nodes_before": _node_count(model.proto),
            "nodes_after": _node_count(optimized.proto),
            "contrib_ops": contrib,
        }
        changed = graph_key(model.proto) != graph_key(optimized.proto)
        return PassResult(optimized, changed, notes, details)


@register
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


@register
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


# --- shared by the graph passes (and fp16) ----------------------------------------------------


def inline_copy(model: Model) -> onnx.ModelProto:
    """A copy of ``model.proto`` with its external tensor data read in (the model's own proto
    is not touched). Libraries that rewrite tensors (onnxslim, converters) need the data."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_model

    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    if model.path is not None and model.external_files:
        load_external_data_for_model(proto, str(model.path.parent))
    return proto


def save_output(pass_name: str, proto: onnx.ModelProto, source: Model, ctx: PassContext) -> Model:
    """``proto`` saved under ``ctx.scratch(pass_name)`` and loaded back; weights go to external
    data when ``source`` had external data (or the model is past protobuf's limit). A model the
    onnx checker rejects is the pass's failure (PassError)."""
    target = ctx.scratch(pass_name)
    try:
        return Model.from_proto(proto).save(
            target, external_data=bool(source.external_files) or None
        )
    except ModelLoadError as e:
        raise PassError(
            f"{pass_name}: the pass produced a model that does not load: {e.message}",
            hint=f"leave {pass_name} out of the recipe for this model",
        ) from e


def graph_key(proto: onnx.ModelProto) -> tuple[Counter[tuple[str, str]], Counter[Any]]:
    """What a pass must change to count as a change: the operators (domain, op type) of every
    node, subgraphs included, and the initializers' types and shapes."""
    ops = Counter((n.domain or "ai.onnx", n.op_type) for n in iter_nodes(proto))
    inits: Counter[Any] = Counter()
    for graph in iter_graphs(proto):
        inits.update((t.data_type, tuple(t.dims)) for t in graph.initializer)
    return ops, inits


def _node_count(proto: onnx.ModelProto) -> int:
    return sum(1 for _ in iter_nodes(proto))


def _load_output(pass_name: str, path: Any) -> Model:
    try:
        return Model.load(path)
    except ModelLoadError as e:
        raise PassError(
            f"{pass_name}: the optimized model does not load: {e.message}",
            hint=f"leave {pass_name} out of the recipe for this model",
        ) from e


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
    proto = inline_copy(model)
    try:
        slimmed = onnxslim.slim(proto, **options)
    except Exception as e:
        text = " ".join(str(e).split())[:300] or type(e).__name__
        raise PassError(
            f"{pass_name}: onnxslim cannot simplify the model: {text}",
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
    result = save_output(pass_name, slimmed, model, ctx)
    nodes_before, nodes_after = _node_count(model.proto), _node_count(result.proto)
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
    return sum(len(g.initializer) for g in iter_graphs(proto))
