"""An existing ONNX model as a conversion source: re-target it to an opset and IR version the
installed ONNX Runtime loads.

    source = load_onnx("model.onnx", ConvertOptions(opset=17))

The reference is ONNX Runtime on the original when it can load it, else the ONNX reference
implementation (``onnx.reference``), so a model stamped with an opset too new for the runtime
is still verified after it is lowered, and one too old (PyTorch 0.x's opset 6: no CPU kernel
for Add@6 or Gemm@6) after it is raised to ``DEFAULT_OPSET`` when no opset is asked for.

A ``StringNormalizer`` whose locale this machine lacks (skl2onnx's text pipelines name none,
and ONNX Runtime then builds ``en_US.UTF-8``, which slim images lack) is set to ``C.UTF-8``
where that case-maps the same (``locales.portable_locales``), in the output and in the
reference alike: the model then loads here and anywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..check import unsupported_cpu_ops
from ..errors import ModelLoadError, one_line
from ..graphs import copy_model, inlined, iter_graphs, iter_nodes, value_names
from ..locales import PORTABLE_LOCALE, portable_locales
from ..model import Model
from ..runtime import OrtRunner, runtime_limits, unoptimized_runner
from ..signature import Signature
from .base import DEFAULT_OPSET, Candidate, ConversionError, ConvertOptions, Source

if TYPE_CHECKING:
    import onnx


class ReferenceRunner:
    """Runs a model with onnx's reference implementation (slow, but needs no runtime)."""

    def __init__(self, model: Model) -> None:
        from onnx.reference import ReferenceEvaluator

        from .legacy_ops import legacy_ops

        self.model = model
        self.name = f"{model.name}@onnx.reference"
        opset = model.opset_imports.get("ai.onnx", 0)
        ops = {n.op_type for n in iter_nodes(model.proto) if n.domain in ("", "ai.onnx")}
        self._evaluator = ReferenceEvaluator(model.proto, new_ops=legacy_ops(opset, ops))

    @property
    def signature(self) -> Signature:
        return self.model.signature

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.signature.validate(feeds)
        outputs = self._evaluator.run(None, dict(feeds))
        names = self.signature.output_names
        return {n: np.asarray(v) for n, v in zip(names, outputs, strict=True)}


def load_onnx(source: str | Path | Model, options: ConvertOptions) -> Source:
    """The model, to be re-targeted to ``options.opset`` (default: the highest the runtime
    loads, if the model's is higher) and an IR version the runtime loads."""
    model = source if isinstance(source, Model) else Model.load(source)
    name = model.name
    max_ir, max_opset = runtime_limits()
    current = model.opset_imports.get("ai.onnx", 0)
    target = options.opset or min(current, max_opset)
    portable = copy_model(model.proto)
    notes = []
    if changed := portable_locales(portable):
        model = Model.from_proto(inlined(model, portable))
    try:
        reference: OrtRunner | ReferenceRunner = OrtRunner(model)
    except ModelLoadError as e:
        reference = _reference_implementation(model, e)
        if options.opset is None and (kernels := _too_old(model.proto, current, max_opset)):
            target = min(DEFAULT_OPSET, max_opset)
            notes.append(
                f"opset {current} is older than ONNX Runtime runs (no CPU kernel for "
                f"{kernels}): re-targeted to opset {target}, checked against onnx's reference "
                "implementation of the original"
            )
    details: dict[str, object] = {"opset_from": current, "opset_to": target}
    if changed:
        details["locales"] = {node: f"{was} -> {PORTABLE_LOCALE}" for node, was in changed.items()}
        reference.name = f"{name} in {PORTABLE_LOCALE}@{reference.name.split('@')[-1]}"

    def export(path: Path) -> None:
        import onnx

        proto = _retarget(model.proto, target, max_ir)
        onnx.save(proto, str(path))

    return Source(
        framework="onnx",
        description=f"ONNX model {name} (opset {current}, IR {model.ir_version})",
        reference=reference,
        candidates=[Candidate(f"onnx version converter (opset {target})", export)],
        second_reference=(
            (lambda: unoptimized_runner(model)) if isinstance(reference, OrtRunner) else None
        ),
        details={**details, "reference": reference.name},
        notes=notes,
    )


def _too_old(proto: onnx.ModelProto, current: int, max_opset: int) -> str:
    """The standard operators ONNX Runtime has no CPU kernel for at the model's opset, when
    a newer one (``DEFAULT_OPSET``) may have them (the PyTorch 0.x exports of opset 6 in
    onnx's own test data: Add@6, Gemm@6, BatchNormalization@6); "" otherwise."""
    if current >= min(DEFAULT_OPSET, max_opset):
        return ""
    missing = sorted(op for op in unsupported_cpu_ops(proto) if op.startswith("ai.onnx::"))
    return ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")


def _reference_implementation(model: Model, load_error: ModelLoadError) -> ReferenceRunner:
    """onnx's reference implementation of a model ONNX Runtime cannot load; the load error
    when that cannot run it either (an operator outside the ONNX standard)."""
    try:
        return ReferenceRunner(model)
    except Exception as e:
        raise ModelLoadError(
            f"{load_error.message}; onnx's reference implementation cannot run it either "
            f"({one_line(e, 120)})",
            hint=load_error.hint,
        ) from e


def _retarget(proto: onnx.ModelProto, opset: int, max_ir: int) -> onnx.ModelProto:
    import onnx
    from onnx import helper

    current = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset)
    out = proto
    if current != opset:
        try:
            out = _convert_version(proto, current, opset)
        except Exception as e:
            raise ConversionError(
                f"onnx cannot convert the model from opset {current} to {opset}: {one_line(e)}",
                hint="pick another --opset, or re-export the model from its framework",
            ) from e
        if current < 7 <= opset:
            _prelu_slopes_per_channel(out)
    else:
        out = onnx.ModelProto()
        out.CopyFrom(proto)
    needed = helper.find_min_ir_version_for(list(out.opset_import), ignore_unknown=True)
    if needed > max_ir:
        raise ConversionError(
            f"opset {opset} needs IR version {needed}, newer than onnxruntime loads ({max_ir})",
            hint="pick a lower --opset",
        )
    out.ir_version = min(out.ir_version, max_ir) if out.ir_version > max_ir else out.ir_version
    out.ir_version = max(out.ir_version, needed)
    if proto.ir_version < 4 <= out.ir_version:
        _weights_not_inputs(out.graph)
    return out


def _convert_version(proto: onnx.ModelProto, current: int, opset: int) -> onnx.ModelProto:
    """onnx's version converter from ``current`` to ``opset``, by way of opset 6 for the first
    opsets: its adapters past 6 (Add's broadcast, Reshape's shape input) need the shapes of
    their inputs, which shape inference finds at opset 6 but not at 1 (a broadcasting Add-1
    stops it). Value infos it leaves without an element type are dropped (ONNX Runtime
    refuses "tensor data type 0")."""
    from onnx import shape_inference, version_converter

    if current < 6 < opset:
        proto = shape_inference.infer_shapes(version_converter.convert_version(proto, 6))
    elif current <= 6 < opset:
        proto = shape_inference.infer_shapes(proto)
    if current <= 6 < opset:
        _explicit_axis_broadcast(proto)
    out = version_converter.convert_version(proto, opset)
    for graph in iter_graphs(out):
        typed = [v for v in graph.value_info if _has_type(v)]
        if len(typed) != len(graph.value_info):
            del graph.value_info[:]
            graph.value_info.extend(typed)
    return out


_LEGACY_BROADCAST = {
    "Add", "Sub", "Mul", "Div", "Pow", "And", "Or", "Xor", "Equal", "Greater", "Less",
}  # fmt: skip


def _explicit_axis_broadcast(proto: onnx.ModelProto) -> None:
    """Binary operators of opsets 1-6 that broadcast a weight B from ``axis`` (Caffe2's bias:
    A[N, C, H, W] + B[C] at axis 1) get B with trailing ones ([C, 1, 1]) and no ``axis``,
    which numpy's broadcasting (opset 7) reads the same: onnx's version converter unsqueezes
    B by one axis too many ([C, 1, 1, 1], giving [C, C, H, W]). Only initializers of the main
    graph whose A has a known rank (``proto`` has been through shape inference)."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    ranks = {
        v.name: len(v.type.tensor_type.shape.dim)
        for v in [*graph.input, *graph.value_info]
        if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")
    }
    weights = {t.name: t for t in graph.initializer}
    for node in graph.node:
        attrs = {a.name: a for a in node.attribute}
        if node.op_type not in _LEGACY_BROADCAST or "axis" not in attrs or len(node.input) < 2:
            continue
        if not ("broadcast" in attrs and attrs["broadcast"].i) or node.input[1] not in weights:
            continue
        b, rank = numpy_helper.to_array(weights[node.input[1]]), ranks.get(node.input[0])
        if rank is None or not 0 < b.ndim < rank:
            continue
        ones = rank - attrs["axis"].i % rank - b.ndim
        name = f"{node.input[1]}__axis{attrs['axis'].i}"
        if ones > 0 and name not in weights:
            weights[name] = numpy_helper.from_array(b.reshape(b.shape + (1,) * ones), name)
            graph.initializer.append(weights[name])
            if proto.ir_version < 4:  # initializers are inputs too there
                graph.input.append(helper.make_tensor_value_info(
                    name, weights[name].data_type, weights[name].dims))  # fmt: skip
        if ones >= 0:
            node.input[1] = name if ones > 0 else node.input[1]
            node.attribute.remove(attrs["axis"])


def _has_type(value: onnx.ValueInfoProto) -> bool:
    kind = value.type.WhichOneof("value")
    return kind != "tensor_type" or value.type.tensor_type.elem_type != 0


def _weights_not_inputs(graph: onnx.GraphProto) -> None:
    """Drop, in place, the graph inputs that name initializers. IR 3 listed every weight as
    an input too; from IR 4 such an input is a value a caller may override, so ONNX Runtime
    folds no constant through it (and warns of each)."""
    weights = {t.name for t in graph.initializer}
    kept = [v for v in graph.input if v.name not in weights]
    del graph.input[:]
    graph.input.extend(kept)


def _prelu_slopes_per_channel(proto: onnx.ModelProto) -> int:
    """Before opset 7 PRelu applied a 1-D slope along axis 1, the channels; from opset 7 it
    broadcasts as numpy does, along the last axis, and onnx's version converter leaves the
    slope as it was (ONNX Runtime: "Attempting to broadcast an axis by a dimension other than
    1"). Reshape, in place, each such slope to ``[C, 1, ...]`` before its PRelu; how many."""
    import onnx
    from onnx import helper, numpy_helper

    graph = proto.graph
    inferred = onnx.shape_inference.infer_shapes(proto).graph
    ranks = {
        v.name: len(v.type.tensor_type.shape.dim)
        for v in (*inferred.input, *inferred.value_info, *inferred.output)
        if v.type.tensor_type.HasField("shape")
    }
    ranks.update({t.name: len(t.dims) for t in graph.initializer})
    taken = value_names(graph)
    nodes: list[onnx.NodeProto] = []
    count = 0
    for node in graph.node:
        rank = ranks.get(node.input[0], 0) if node.op_type == "PRelu" else 0
        if rank > 2 and ranks.get(node.input[1]) == 1:
            stem = f"{node.input[1]}_per_channel"
            shaped = next(n for i in range(len(taken) + 1) if (n := f"{stem}_{i}") not in taken)
            taken |= {shaped, f"{shaped}_shape"}
            dims = np.array([-1] + [1] * (rank - 2), np.int64)
            graph.initializer.append(numpy_helper.from_array(dims, f"{shaped}_shape"))
            nodes.append(helper.make_node("Reshape", [node.input[1], f"{shaped}_shape"], [shaped]))
            node.input[1] = shaped
            count += 1
        nodes.append(node)
    if count:
        del graph.node[:]
        graph.node.extend(nodes)
    return count
