"""The ``ort_graph`` pass: ONNX Runtime's offline graph optimizer, its output saved.

    ctx = PassContext(workdir, feeds)
    result = OrtGraph(level="extended").apply(model, ctx)   # ORT's fusions, saved offline
    result.model, result.changed, result.notes

The pass writes its output under ``ctx.scratch(name)`` and leaves the input model as it was.
A model with external data keeps its weights in external data (``model.data``). When ONNX
Runtime's fusions write ops the model's opset lacks (LayerNormalization, opset 17, into an
opset-11 model), ``ort_graph`` raises the opset with onnx's version converter first, or turns
those fusions off where no opset has the op, and its notes say which. onnxslim's passes
(``slim``, ``fold``) are in ``slim``; what every pass does to its output is in ``output``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from ..errors import ModelLoadError
from ..graphs import PROTO_LIMIT, inlined, iter_nodes
from ..model import Model
from ..ort_crashes import known_crashes
from ..runtime import (
    SessionConfig,
    ort_error_message,
    provider_name,
    session_options,
    short_provider_name,
    version_problem,
)
from .base import Pass, PassContext, PassError, PassResult, param
from .output import (
    conformed,
    convert_opset,
    default_opset,
    graph_key,
    node_count,
    ops_past_opset,
    save_output,
)

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
        notes.extend(
            f"turned off onnxruntime's {crash.optimizer}: {crash.why}"
            for crash in known_crashes(model, self.level)
        )
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
            "nodes_before": node_count(model.proto),
            "nodes_after": node_count(optimized.proto),
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
        opts = session_options(SessionConfig(graph_optimization=self.level), model)
        opts.optimized_model_filepath = str(target)
        if model.external_files or model.size_bytes > _EXTERNAL_PAST:
            opts.add_session_config_entry(_ORT_EXTERNAL_FILE, f"{target.stem}.data")
            opts.add_session_config_entry(_ORT_EXTERNAL_MIN, "1024")
        source = str(model.path) if model.path is not None else model.proto.SerializeToString()
        crashing = [crash.optimizer for crash in known_crashes(model, self.level)]
        try:
            ort.InferenceSession(
                source,
                sess_options=opts,
                providers=providers,
                disabled_optimizers=[*disabled, *crashing],
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


def _load_output(pass_name: str, path: Any) -> Model:
    try:
        return Model.load(path)
    except ModelLoadError as e:
        raise PassError(
            f"{pass_name}: the optimized model does not load: {e.message}",
            hint=f"leave {pass_name} out of the recipe for this model",
        ) from e
