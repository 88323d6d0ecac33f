"""Int8 with ONNX Runtime's quantizer: dynamic (int8 weights, activations quantized at run
time) and static QDQ (activation ranges calibrated), with sensitivity ranking to keep the
nodes that int8 hurts most in float.

    result = DynamicInt8(per_channel=True).apply(model, ctx)        # int8_dynamic
    result = StaticInt8(method="entropy", exclude_sensitive=2).apply(model, ctx)
    result.details["excluded_nodes"]                                 # nodes kept in float

    plan = StaticInt8().plan(model, ctx)          # pre-processed source, checked feeds
    quantized = plan.build([])                    # calibrates once; every node it can in int8
    ranking = rank_sensitivity(plan.source, quantized, feeds)        # most sensitive first
    model, kept = exclude_until(plan.source, plan.build, judge, ranking, max_excluded=8)

Both passes first move tensors held in Constant nodes to initializers (Paddle2ONNX keeps its
weights there, and ORT quantizes initializers only) and raise the opset with onnx's version
converter where the quantized model would be invalid at its own (per-channel Q/DQ needs
DequantizeLinear's ``axis``, opset 13; below opset 10 ORT's quantizer would raise it to 11
unreported); the notes say so. Dynamic per-channel int8 writes no DequantizeLinear with an
axis and keeps the opset.

Both passes then run ORT's ``quant_pre_process`` (symbolic and ONNX shape inference; for
static also ORT's basic graph optimizations, which fold BatchNorm into Conv and MatMul+Add into
Gemm so biases are quantized to int32 with the product scale). Dynamic skips the optimization:
ORT's dynamic quantizer has no Gemm, so a fused MatMul+Add would stay in float.

Excluding a node with ORT's ``nodes_to_exclude`` keeps its weights in float but not its
activation inputs: the Q/DQ pair its producer quantizes for other consumers still feeds it.
Every excluded node here is rewired to read the float tensor before that pair (re-applying a
Relu/Clip the quantizer folded into the pair), so it really runs in float.

ORT also quantizes tensors whose calibrated range is infinite (-inf attention masks) with an
infinite scale, which turns them into NaN; the nodes around such tensors always stay in float
(``details["unbounded_nodes"]``). Its entropy and percentile calibrators cannot histogram them
at all: those methods then fail with a hint to use minmax.

Calling ORT's quantizer (preparing and staging the model, its errors and logging) is in
``ort_quantizer``; the rewiring that keeps nodes in float is in ``qdq_float``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from ..errors import UsageError
from ..graphs import copy_model
from ..model import Model
from .base import Pass, PassContext, PassResult, param
from .calibration import FeedsReader, by_shape, checked_calibration
from .cpu_features import x86_without_vnni
from .ort_quantizer import (
    map_nodes,
    needs_external,
    ort_errors,
    prepare_for_quantizer,
    quiet_ort,
    refuse_quantized,
    stage_directory,
    stage_model,
    with_gemm_rewrites,
)
from .output import conform, conformed
from .qdq_float import keep_float, unbounded_nodes
from .sensitivity import NodeSensitivity, rank_dynamic_sensitivity, rank_sensitivity

_QTYPES = {"int8": "QInt8", "uint8": "QUInt8"}

_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}

_RANK_SAMPLES = 16
"""Feed sets used to rank sensitivity."""


@dataclass(frozen=True)
class DynamicInt8(Pass):
    """Quantize weights to int8 ahead of time and activations at run time (ORT quantize_dynamic:
    MatMul, Conv, Attention, LSTM, Gather, Transpose by default; a Gemm becomes MatMul + Add).
    Needs no calibration data; ``exclude_sensitive`` keeps the nodes int8 hurts most per FLOP
    in float."""

    name: ClassVar[str] = "int8_dynamic"
    family: ClassVar[str] = "int8"

    per_channel: bool = param(False, "one scale per output channel, not one per tensor")
    weight_type: Literal["int8", "uint8"] = param(
        "int8", "weight type: int8 (ORT's default) or uint8"
    )
    op_types: Sequence[str] = param((), "op types to quantize (empty: ORT's default set)")
    nodes_to_exclude: Sequence[str] = param((), "node names to keep in float")
    reduce_range: bool = param(False, "7-bit weights: avoids u8s8 saturation on x86 w/o VNNI")
    exclude_sensitive: int = param(
        0, "keep this many MatMuls in float, those int8 hurts most per FLOP"
    )
    preprocess: bool = param(True, "run ORT's quant_pre_process shape inference first")

    def __post_init__(self) -> None:
        if self.exclude_sensitive < 0:
            raise UsageError(
                f"int8_dynamic: exclude_sensitive must be at least 0, got {self.exclude_sensitive}"
            )

    def apply(self, model: Model, ctx: PassContext) -> PassResult:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        refuse_quantized(self.name, model)
        target = ctx.scratch(self.name)
        notes: list[str] = []
        details: dict[str, Any] = {}
        with stage_directory(target) as stage:
            prepared = prepare_for_quantizer(self.name, model, stage / "prepared", False, notes)
            source = stage_model(self.name, prepared, stage, self.preprocess, False, notes)
            excluded = map_nodes(self.name, self.nodes_to_exclude, model, source, notes)
            if self.exclude_sensitive and ctx.feeds:
                ranking = rank_dynamic_sensitivity(
                    source,
                    ctx.feeds[:_RANK_SAMPLES],
                    per_channel=self.per_channel,
                    reduce_range=self.reduce_range,
                )
                what = "MatMul(s) int8 hurts most per FLOP"
                sensitive = _most_sensitive(ranking, self.exclude_sensitive, what, details, notes)
                excluded = list(dict.fromkeys([*excluded, *sensitive]))
            excluded = with_gemm_rewrites(excluded, source)
            with ort_errors(self.name), quiet_ort():
                quantize_dynamic(
                    str(source.path),
                    str(target),
                    op_types_to_quantize=list(self.op_types) or None,
                    per_channel=self.per_channel,
                    reduce_range=self.reduce_range,
                    weight_type=getattr(QuantType, _QTYPES[self.weight_type]),
                    nodes_to_exclude=excluded or None,
                    use_external_data_format=needs_external(source),
                )
            quantized = conformed(self.name, Model.load(target), model, ctx)
        _saturation_note(self.per_channel, self.weight_type, self.reduce_range, notes)
        return _result(self.name, model, quantized, notes, {**details, "excluded_nodes": excluded})


@dataclass(frozen=True)
class StaticInt8(Pass):
    """Quantize weights and activations to int8 as QuantizeLinear/DequantizeLinear pairs (ORT
    quantize_static, QDQ format), activation ranges calibrated on the calibration feeds (else
    the validation feeds). Activations default to uint8 and weights to int8 (U8S8), what ORT
    recommends for x86 CPUs; ``exclude_sensitive`` keeps the nodes int8 hurts most in float."""

    name: ClassVar[str] = "int8_static"
    family: ClassVar[str] = "int8"

    method: Literal["minmax", "entropy", "percentile"] = param(
        "minmax", "calibration: min/max, entropy (KL) or percentile (99.999%) ranges"
    )
    per_channel: bool = param(False, "one weight scale per output channel, not one per tensor")
    activation_type: Literal["int8", "uint8"] = param(
        "uint8", "activation type (uint8: ORT's advice for x86 CPU)"
    )
    weight_type: Literal["int8", "uint8"] = param("int8", "weight type")
    op_types: Sequence[str] = param((), "op types to quantize (empty: every type ORT can)")
    nodes_to_exclude: Sequence[str] = param((), "node names to keep in float")
    reduce_range: bool = param(False, "7-bit weights: avoids u8s8 saturation on x86 w/o VNNI")
    calibration_samples: int = param(100, "use at most this many calibration feed sets")
    exclude_sensitive: int = param(0, "keep this many of the most int8-sensitive nodes in float")
    preprocess: bool = param(True, "run ORT's quant_pre_process (shape inference, fusions) first")

    def __post_init__(self) -> None:
        if self.activation_type == "int8" and self.weight_type == "uint8":
            raise UsageError(
                "int8_static: ONNX Runtime does not support int8 activations with uint8 weights",
                hint="use weight_type='int8', or activation_type='uint8'",
            )
        if self.calibration_samples < 1 or self.exclude_sensitive < 0:
            raise UsageError(
                "int8_static: calibration_samples must be at least 1 and exclude_sensitive at "
                f"least 0, got {self.calibration_samples} and {self.exclude_sensitive}"
            )

    def apply(self, model: Model, ctx: PassContext) -> PassResult:
        plan = self.plan(model, ctx)
        quantized = plan.build()
        details: dict[str, Any] = {"calibration_samples": len(plan.calibration)}
        sensitive: list[str] = []
        if self.exclude_sensitive:
            feeds = list(ctx.feeds) or plan.calibration
            ranking = rank_sensitivity(plan.source, quantized, feeds[:_RANK_SAMPLES])
            sensitive = _most_sensitive(
                ranking, self.exclude_sensitive, "most int8-sensitive node(s)", details, plan.notes
            )
            if sensitive:
                quantized = plan.build(sensitive)
        details["sensitive_nodes"] = sensitive
        details["unbounded_nodes"] = list(plan.unbounded or ())
        details["excluded_nodes"] = plan.float_nodes(sensitive)
        _saturation_note(self.per_channel, self.weight_type, self.reduce_range, plan.notes)
        return _result(self.name, model, quantized, plan.notes, details)

    def plan(self, model: Model, ctx: PassContext) -> StaticPlan:
        """Pre-process ``model`` and check the calibration feeds; ``build`` then quantizes it
        with any set of nodes kept in float, calibrating on the first build only (later builds
        reuse the ranges from ORT's calibration cache)."""
        refuse_quantized(self.name, model)
        feeds = ctx.calibration if ctx.calibration is not None else ctx.feeds
        sets, _ = by_shape(checked_calibration(feeds, model.signature, self.calibration_samples))
        notes: list[str] = []
        directory = ctx.scratch(f"{self.name}-source").parent
        prepared = prepare_for_quantizer(
            self.name, model, directory / "prepared", self.per_channel, notes
        )
        source = stage_model(self.name, prepared, directory, self.preprocess, True, notes)
        excluded = map_nodes(self.name, self.nodes_to_exclude, model, source, notes)
        return StaticPlan(self, source, sets, ctx, excluded, notes)


@dataclass
class StaticPlan:
    """A model ready for static int8: ``source`` is the float model as the quantizer sees it
    (pre-processed; node names in ``build`` and rankings refer to it)."""

    step: StaticInt8
    source: Model
    calibration: list[dict[str, np.ndarray]]
    ctx: PassContext
    excluded: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unbounded: list[str] | None = None
    """Nodes around tensors whose calibrated range is infinite (known after calibrating)."""

    @property
    def cache(self) -> Path:
        assert self.source.path is not None
        return self.source.path.parent / "calibration.json"

    def build(self, exclude: Sequence[str] = ()) -> Model:
        """The int8 model with the user's excluded nodes and ``exclude`` kept in float, written
        to a fresh scratch directory; the first build calibrates, later ones reuse the ranges."""
        present = {m.name for m in self.source.proto.graph.node}
        unknown = [n for n in exclude if n not in present]
        if unknown:
            raise UsageError(
                f"{self.step.name}: no node named {unknown[0]!r} in the pre-processed model",
                hint="take node names from rank_sensitivity or the StaticPlan's source",
            )
        target = self.ctx.scratch(self.step.name)
        with stage_directory(target) as stage:
            nodes = self.float_nodes(exclude)
            raw = self._quantize(stage / "model.onnx", nodes)
            if self.unbounded is None:
                self.unbounded = unbounded_nodes(self.cache, self.source.proto)
                if self.unbounded:
                    self.notes.append(
                        f"kept {len(self.unbounded)} node(s) in float around tensors that reach "
                        f"+-inf or NaN in calibration (e.g. -inf attention masks), which int8 "
                        f"cannot represent: {_listing(self.unbounded)}"
                    )
                    nodes = self.float_nodes(exclude)
                    raw = self._quantize(stage / "model.onnx", nodes)
            proto = copy_model(raw.proto)
            if nodes:
                keep_float(proto, self.source.proto, nodes)
            conform(proto, self.source)
            return Model(proto, raw.path, raw.external_files).save(target)

    def float_nodes(self, exclude: Sequence[str] = ()) -> list[str]:
        """The nodes a build with ``exclude`` keeps in float: the user's, those around
        unbounded tensors (once calibrated), then ``exclude``."""
        return list(dict.fromkeys([*self.excluded, *(self.unbounded or ()), *exclude]))

    def _quantize(self, target: Path, nodes: list[str]) -> Model:
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        step = self.step
        cached = self.cache.is_file()
        reader = None if cached else FeedsReader(self.calibration)
        # No CalibMaxIntermediateOutputs: ORT 1.31 discards each full chunk instead of merging
        # its ranges, so only the last len % N samples would count. MinMax keeps two reduced
        # values per tensor and sample, which is small anyway.
        options: dict[str, Any] = {}
        _, run = by_shape(self.calibration)
        if run < len(self.calibration):  # calibrate run by run, each of one shape
            options["CalibStridedMinMax"] = run
        hint = None
        if step.method != "minmax":
            hint = (
                f"{step.method} calibration builds histograms, which fail on tensors that reach "
                "+-inf (e.g. -inf attention masks); method='minmax' handles them"
            )
        with ort_errors(step.name, hint), quiet_ort():
            quantize_static(
                str(self.source.path),
                str(target),
                reader,
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(step.op_types) or None,
                per_channel=step.per_channel,
                reduce_range=step.reduce_range,
                activation_type=getattr(QuantType, _QTYPES[step.activation_type]),
                weight_type=getattr(QuantType, _QTYPES[step.weight_type]),
                nodes_to_exclude=nodes or None,
                use_external_data_format=needs_external(self.source),
                calibrate_method=getattr(CalibrationMethod, _METHODS[step.method]),
                extra_options=options,
                calibration_cache_path=str(self.cache),
            )
        return Model.load(target)


def _listing(names: Sequence[str], shown: int = 6) -> str:
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def _most_sensitive(
    ranking: Sequence[NodeSensitivity],
    count: int,
    what: str,
    details: dict[str, Any],
    notes: list[str],
) -> list[str]:
    """The ``count`` first nodes of ``ranking``, recorded in ``details`` and ``notes``."""
    sensitive = [r.node for r in ranking[:count]]
    details["sensitivity"] = [r.to_dict() for r in ranking[: max(10, len(sensitive))]]
    details["sensitive_nodes"] = sensitive
    if sensitive:
        notes.append(f"kept the {len(sensitive)} {what} in float: " + _listing(sensitive, 12))
    return sensitive


def _result(
    name: str, model: Model, quantized: Model, notes: list[str], details: dict[str, Any]
) -> PassResult:
    weights = _int8_weights(quantized)
    details = {"int8_weights": weights, **details}
    if not weights:
        notes.append(f"{name}: no node was quantized; the model is unchanged")
        return PassResult(model, changed=False, notes=notes, details=details)
    return PassResult(quantized, changed=True, notes=notes, details=details)


def _int8_weights(model: Model) -> int:
    """Initializers of type int8 or uint8 (quantized weights and zero points excluded)."""
    import onnx

    kinds = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    return sum(
        1
        for t in model.proto.graph.initializer
        if t.data_type in kinds and math.prod(t.dims) > 1 and not t.name.endswith("zero_point")
    )


def _saturation_note(per_channel: bool, weights: str, reduce_range: bool, notes: list[str]) -> None:
    if per_channel and weights == "int8" and not reduce_range and x86_without_vnni():
        notes.append(
            "per-channel int8 weights use all 8 bits, which can saturate ORT's u8s8 kernels on "
            "x86 CPUs without VNNI such as this one; if parity drops, set reduce_range=true"
        )
