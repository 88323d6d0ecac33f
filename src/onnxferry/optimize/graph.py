"""Graph passes: ONNX Runtime's offline optimizer, onnxslim, and constant folding.

    ctx = PassContext(workdir, feeds)
    OrtGraph(level="extended").apply(model, ctx)   # ORT's fusions, saved offline
    Slim().apply(model, ctx)                       # onnxslim: fold, fuse, eliminate
    result = Fold().apply(model, ctx)              # constants folded, dead nodes removed
    result.model, result.changed, result.notes

Each pass writes its output under ``ctx.scratch(name)`` and leaves the input model as it was.
A model with external data keeps its weights in external data (``model.data``).

Outputs stay valid for the input's IR version and opset: below IR 4 every initializer is
listed as a graph input (``conform``, shared by every pass); when ONNX Runtime's fusions write
ops the model's opset lacks (LayerNormalization, opset 17, into an opset-11 model),
``ort_graph`` raises the opset with onnx's version converter first, or turns those fusions off
where no opset has the op, and its notes say which. ``output_problem`` is the chain's check.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ..errors import ModelLoadError, one_line
from ..graphs import PROTO_LIMIT, copy_model, inlined, iter_initializers, iter_nodes
from ..model import Model, checker_problem
from ..runtime import (
    SessionConfig,
    ort_error_message,
    provider_name,
    session_options,
    short_provider_name,
    version_problem,
)
from .base import Pass, PassContext, PassError, PassResult, param

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

_EXTERNAL_PAST = PROTO_LIMIT // 2
"""Models larger than this (bytes) get their optimized weights in external data: half of
protobuf's limit, as ONNX Runtime's optimizer may grow a model (folded constants)."""

_ORT_EXTERNAL_FILE = "session.optimized_model_external_initializers_file_name"
_ORT_EXTERNAL_MIN = "session.optimized_model_external_initializers_min_size_in_bytes"


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
        providers = _ort_providers(ctx.provider, notes)
        optimized = self._optimize(model, ctx, providers)
        past = ops_past_opset(optimized.proto)
        if past:
            optimized = self._within_opset(model, ctx, providers, past, notes)
        optimized = conformed(self.name, optimized, model, ctx)
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
            "opset": default_opset(optimized.proto),
        }
        changed = graph_key(model.proto) != graph_key(optimized.proto)
        return PassResult(optimized, changed, notes, details)

    def _optimize(
        self, model: Model, ctx: PassContext, providers: list[str], disabled: Sequence[str] = ()
    ) -> Model:
        """ONNX Runtime's optimized ``model``, saved under ``ctx.scratch`` and loaded back,
        with the named optimizers (``disabled``) turned off."""
        import onnxruntime as ort

        target = ctx.scratch(self.name)
        opts = session_options(SessionConfig(graph_optimization=self.level))
        opts.optimized_model_filepath = str(target)
        if model.external_files or model.size_bytes > _EXTERNAL_PAST:
            opts.add_session_config_entry(_ORT_EXTERNAL_FILE, f"{target.stem}.data")
            opts.add_session_config_entry(_ORT_EXTERNAL_MIN, "1024")
        source = str(model.path) if model.path is not None else model.proto.SerializeToString()
        try:
            ort.InferenceSession(
                source, sess_options=opts, providers=providers, disabled_optimizers=list(disabled)
            )
        except Exception as e:
            reason = version_problem(model.ir_version, model.opset_imports)
            raise PassError(
                f"{self.name}: onnxruntime cannot load the model: {reason or ort_error_message(e)}",
                hint="run `ferry check` on the model; ort_graph needs a model onnxruntime runs",
            ) from e
        return _load_output(self.name, target)

    def _within_opset(
        self,
        model: Model,
        ctx: PassContext,
        providers: list[str],
        past: dict[str, int | None],
        notes: list[str],
    ) -> Model:
        """The optimized model again, valid ONNX this time: ONNX Runtime's fusions wrote ``past``
        (ops ``model``'s opset lacks, e.g. LayerNormalization, opset 17, from LayerNormFusion).

        When every such op is standard ONNX, the opset is raised with onnx's version converter
        first (the fusions are the speed this pass is for, and its output is tied to onnxruntime
        anyway); else, or when that fails, the fusions that write them are turned off."""
        opset = default_opset(model.proto)
        listing = _op_listing(past)
        tried = ""
        if all(past.values()):
            wanted = max(v for v in past.values() if v is not None)
            try:
                converted = convert_opset(self.name, inlined(model), wanted)
                raised = save_output(f"{self.name}-opset{wanted}", converted, model, ctx)
                optimized = self._optimize(raised, ctx, providers)
            except PassError as e:
                tried = f"; {e.message}"
            else:
                if not ops_past_opset(optimized.proto):
                    notes.append(
                        f"raised the opset from {opset} to {wanted} with onnx's version "
                        f"converter: onnxruntime's fusions write {listing}"
                    )
                    return optimized
                tried = f"; at opset {wanted} onnxruntime still writes ops no opset has"
        disabled = sorted({_ORT_FUSIONS[op] for op in past if op in _ORT_FUSIONS})
        if all(op in _ORT_FUSIONS for op in past):
            optimized = self._optimize(model, ctx, providers, disabled)
            if not ops_past_opset(optimized.proto):
                notes.append(
                    f"kept opset {opset}: turned off onnxruntime's {', '.join(disabled)}, as it "
                    f"writes {listing}{tried}"
                )
                return optimized
        raise PassError(
            f"{self.name}: onnxruntime writes {listing}, not valid in this opset-{opset} model"
            f"{tried}",
            hint="use level 'basic', or convert the model to a newer opset first",
        )


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


_ORT_FUSIONS = {
    "LayerNormalization": "LayerNormFusion",
    "SimplifiedLayerNormalization": "SimplifiedLayerNormFusion",
}
"""onnxruntime's fusions that write ops into the default domain, by the op they write
(LayerNormalization is standard from opset 17; SimplifiedLayerNormalization is in no opset)."""


def _ort_providers(provider: str, notes: list[str]) -> list[str]:
    """The providers to optimize for: ``provider`` (then cpu), or cpu alone when this
    onnxruntime build lacks it (with a note)."""
    import onnxruntime as ort

    wanted = provider_name(provider)
    cpu = "CPUExecutionProvider"
    if wanted not in ort.get_available_providers():
        notes.append(f"provider {provider!r} is not in this onnxruntime build: optimized for cpu")
        return [cpu]
    return [wanted] if wanted == cpu else [wanted, cpu]


def _op_listing(ops: dict[str, int | None]) -> str:
    """E.g. "LayerNormalization (opset 17), SimplifiedLayerNormalization (in no opset)"."""
    return ", ".join(
        f"{op} (opset {version})" if version else f"{op} (in no ONNX opset)"
        for op, version in ops.items()
    )


# --- shared by the graph passes (and fp16) ----------------------------------------------------


def save_output(
    pass_name: str, proto: onnx.ModelProto, source: Model, ctx: PassContext | Path
) -> Model:
    """``proto`` made valid for its IR version (``conform``), saved under
    ``ctx.scratch(pass_name)`` (or at the path given) and loaded back; weights go to external
    data when ``source`` had external data (or the model is past protobuf's limit). A model
    that does not load is the pass's failure (PassError)."""
    conform(proto, source)
    target = ctx if isinstance(ctx, Path) else ctx.scratch(pass_name)
    return _save(pass_name, Model.from_proto(proto), target, bool(source.external_files) or None)


def _save(pass_name: str, model: Model, target: Path, external: bool | None) -> Model:
    try:
        return model.save(target, external_data=external)
    except ModelLoadError as e:
        raise PassError(
            f"{pass_name}: the pass produced a model that does not load: {e.message}",
            hint=f"leave {pass_name} out of the recipe for this model",
        ) from e


def graph_key(proto: onnx.ModelProto) -> tuple[Counter[tuple[str, str]], Counter[Any]]:
    """What a pass must change to count as a change: the operators (domain, op type) of every
    node, subgraphs included, and the initializers' types and shapes."""
    ops = Counter((n.domain or "ai.onnx", n.op_type) for n in iter_nodes(proto))
    inits: Counter[Any] = Counter((t.data_type, tuple(t.dims)) for t in iter_initializers(proto))
    return ops, inits


# --- valid for the input's IR version and opset ----------------------------------------------

_DEFAULT_DOMAINS = ("", "ai.onnx")


def conform(proto: onnx.ModelProto, source: Model) -> int:
    """Make a pass's output valid for its IR version, in place; how many inputs it changed.

        conform(proto, source)      # IR < 4: every initializer is listed in graph.input

    Before IR version 4 every initializer must also be a graph input, and libraries (onnxslim,
    ORT's quantizer, converters) write new initializers without one. Each initializer of the
    main graph gets an input of its own type and shape (fixed when a pass changed it); inputs
    that only named an initializer of ``source`` that is gone are dropped. ONNX Runtime treats
    initializers as constants below IR 4, so this costs nothing at run time. Later IR versions
    are left as they are.
    """
    from onnx import helper

    if proto.ir_version >= 4:
        return 0
    graph = proto.graph
    initializers = {t.name: t for t in graph.initializer}
    gone = {t.name for t in source.proto.graph.initializer} - set(initializers)
    inputs = [i for i in graph.input if i.name not in gone]
    changed = len(graph.input) - len(inputs)
    listed = {i.name: i for i in inputs}
    for name, tensor in initializers.items():
        wanted = helper.make_tensor_value_info(name, tensor.data_type, list(tensor.dims))
        if name not in listed:
            inputs.append(wanted)
            changed += 1
        elif listed[name].type != wanted.type:
            listed[name].type.CopyFrom(wanted.type)
            changed += 1
    if changed:
        del graph.input[:]
        graph.input.extend(inputs)
    return changed


def conformed(pass_name: str, result: Model, source: Model, ctx: PassContext) -> Model:
    """``result`` (a pass's output on disk) made valid for its IR version (``conform``): itself
    when nothing needs fixing, else a fixed copy under ``ctx.scratch``."""
    if result.ir_version >= 4:
        return result
    proto = copy_model(result.proto)
    if not conform(proto, source):
        return result
    fixed = Model(proto, result.path, result.external_files)
    return _save(pass_name, fixed, ctx.scratch(pass_name), bool(result.external_files) or None)


def output_problem(result: Model, source: Model) -> str | None:
    """What the onnx checker rejects in ``result``, a pass's output, when it accepts ``source``
    (one line), else None: a pass must not make a valid model invalid. A source the checker
    rejects already (some models in the wild) leaves the judgement to ONNX Runtime."""
    problem = _checker_problem(result)
    if problem is None or _checker_problem(source) is not None:
        return None
    return problem


def _checker_problem(model: Model) -> str | None:
    if model.path is not None:
        return checker_problem(model.path)
    return checker_problem(Path(model.name), model.proto.SerializeToString())


def default_opset(proto: onnx.ModelProto) -> int:
    """The model's opset of the default (ai.onnx) domain."""
    return next((int(o.version) for o in proto.opset_import if o.domain in _DEFAULT_DOMAINS), 1)


def ops_past_opset(proto: onnx.ModelProto) -> dict[str, int | None]:
    """Default-domain operators ``proto``'s opset does not have, each with the first opset that
    has it (None: none has it, an onnxruntime op written to the default domain).

        ops_past_opset(proto)        # {"LayerNormalization": 17} in an opset-11 model
    """
    import onnx

    version = default_opset(proto)
    missing: dict[str, int | None] = {}
    for node in iter_nodes(proto):
        if node.domain not in _DEFAULT_DOMAINS or node.op_type in missing:
            continue
        try:
            onnx.defs.get_schema(node.op_type, version, "")
        except onnx.defs.SchemaError:
            missing[node.op_type] = _first_opset(node.op_type)
    return missing


def _first_opset(op_type: str) -> int | None:
    import onnx

    versions = [
        s.since_version
        for s in onnx.defs.get_all_schemas_with_history()
        if s.name == op_type and s.domain in _DEFAULT_DOMAINS
    ]
    return min(versions) if versions else None


def convert_opset(pass_name: str, proto: onnx.ModelProto, version: int) -> onnx.ModelProto:
    """``proto`` converted to opset ``version`` by onnx's version converter (a new model; tensor
    data must be inline, see ``graphs.inlined``); PassError when the converter cannot."""
    from onnx import version_converter

    try:
        return version_converter.convert_version(proto, version)
    except Exception as e:
        raise PassError(
            f"{pass_name}: onnx's version converter cannot raise the opset from "
            f"{default_opset(proto)} to {version}: {one_line(e)}",
            hint=f"convert the model to opset {version} first (ferry convert --opset {version})",
        ) from e


def constants_to_initializers(graph: onnx.GraphProto) -> int:
    """Move the tensors of ``graph``'s Constant nodes (attribute ``value``) to initializers
    named after their outputs, in place; how many it moved.

        constants_to_initializers(proto.graph)   # Paddle2ONNX keeps conv weights in Constants

    Quantizers only quantize initializers. Constants whose output is a graph output stay.
    """
    outputs = {o.name for o in graph.output}
    keep, moved = [], []
    for node in graph.node:
        value = _constant_tensor(node)
        if value is None or node.output[0] in outputs:
            keep.append(node)
            continue
        tensor = type(value)()
        tensor.CopyFrom(value)
        tensor.name = node.output[0]
        moved.append(tensor)
    if moved:
        del graph.node[:]
        graph.node.extend(keep)
        graph.initializer.extend(moved)
    return len(moved)


def _constant_tensor(node: onnx.NodeProto) -> onnx.TensorProto | None:
    """The tensor a Constant node holds in its ``value`` attribute, else None."""
    if node.op_type != "Constant" or node.domain not in _DEFAULT_DOMAINS:
        return None
    return next((a.t for a in node.attribute if a.name == "value" and a.HasField("t")), None)


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
    return sum(1 for _ in iter_initializers(proto))
