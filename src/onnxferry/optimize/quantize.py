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

Both passes first run ORT's ``quant_pre_process`` (symbolic and ONNX shape inference; for
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
"""

from __future__ import annotations

import contextlib
import functools
import math
import platform
import shutil
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from ..errors import FerryError, UsageError
from ..model import Model
from ..runtime import OrtRunner
from .base import Pass, PassContext, PassError, PassResult, param, register
from .calibration import FeedsReader, by_shape, checked_feeds

if TYPE_CHECKING:
    import onnx

_QTYPES = {"int8": "QInt8", "uint8": "QUInt8"}
_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
_QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
_INTEGER_OPS = frozenset(
    {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger"}
    | {"QLinearMatMul", "QLinearConv", "QGemm", "QAttention", "DynamicQuantizeMatMul"}
)
_FOLDED_ACTIVATIONS = ("Relu", "Clip")
_PROBE = "ferry.sens/"
_EXTERNAL_OVER = 1536 * 1024**2
"""Inline bytes past which quantized models are written with external data."""
_RANK_SAMPLES = 16
"""Feed sets used to rank sensitivity."""


# --- passes --------------------------------------------------------------------------------


@register
@dataclass(frozen=True)
class DynamicInt8(Pass):
    """Quantize weights to int8 ahead of time and activations at run time (ORT quantize_dynamic:
    MatMul, Conv, Attention, LSTM, Gather, Transpose by default; ORT has no dynamic Gemm).
    Needs no calibration data."""

    name: ClassVar[str] = "int8_dynamic"
    family: ClassVar[str] = "int8"

    per_channel: bool = param(False, "one scale per output channel, not one per tensor")
    weight_type: Literal["int8", "uint8"] = param(
        "int8", "weight type: int8 (ORT's default) or uint8"
    )
    op_types: Sequence[str] = param((), "op types to quantize (empty: ORT's default set)")
    nodes_to_exclude: Sequence[str] = param((), "node names to keep in float")
    reduce_range: bool = param(False, "7-bit weights: avoids u8s8 saturation on x86 w/o VNNI")
    preprocess: bool = param(True, "run ORT's quant_pre_process shape inference first")

    def apply(self, model: Model, ctx: PassContext) -> PassResult:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        _refuse_quantized(self.name, model)
        target = ctx.scratch(self.name)
        notes: list[str] = []
        with _stage_dir(target) as stage:
            source = _stage(self.name, model, stage, self.preprocess, False, notes)
            excluded = _map_nodes(self.name, self.nodes_to_exclude, model, source, notes)
            with _ort_errors(self.name), _quiet_ort():
                quantize_dynamic(
                    str(source.path),
                    str(target),
                    op_types_to_quantize=list(self.op_types) or None,
                    per_channel=self.per_channel,
                    reduce_range=self.reduce_range,
                    weight_type=getattr(QuantType, _QTYPES[self.weight_type]),
                    nodes_to_exclude=excluded or None,
                    use_external_data_format=_needs_external(source),
                )
            quantized = Model.load(target)
        _saturation_note(self.per_channel, self.weight_type, self.reduce_range, notes)
        return _result(self.name, model, quantized, notes, {"excluded_nodes": excluded})


@register
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
            sensitive = [r.node for r in ranking[: self.exclude_sensitive]]
            details["sensitivity"] = [r.to_dict() for r in ranking[: max(10, len(sensitive))]]
            if sensitive:
                quantized = plan.build(sensitive)
                plan.notes.append(
                    f"kept the {len(sensitive)} most int8-sensitive node(s) in float: "
                    + _listing(sensitive, 12)
                )
        details["sensitive_nodes"] = sensitive
        details["unbounded_nodes"] = list(plan.unbounded or ())
        details["excluded_nodes"] = plan.float_nodes(sensitive)
        _saturation_note(self.per_channel, self.weight_type, self.reduce_range, plan.notes)
        return _result(self.name, model, quantized, plan.notes, details)

    def plan(self, model: Model, ctx: PassContext) -> StaticPlan:
        """Pre-process ``model`` and check the calibration feeds; ``build`` then quantizes it
        with any set of nodes kept in float, calibrating on the first build only (later builds
        reuse the ranges from ORT's calibration cache)."""
        _refuse_quantized(self.name, model)
        feeds = ctx.calibration if ctx.calibration is not None else ctx.feeds
        sets, _ = by_shape(checked_feeds(feeds, model.signature, self.calibration_samples))
        notes: list[str] = []
        source_path = ctx.scratch(f"{self.name}-source")
        source = _stage(self.name, model, source_path.parent, self.preprocess, True, notes)
        excluded = _map_nodes(self.name, self.nodes_to_exclude, model, source, notes)
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
        with _stage_dir(target) as stage:
            nodes = self.float_nodes(exclude)
            raw = self._quantize(stage / "model.onnx", nodes)
            if self.unbounded is None:
                self.unbounded = _unbounded_nodes(self.cache, self.source.proto)
                if self.unbounded:
                    self.notes.append(
                        f"kept {len(self.unbounded)} node(s) in float around tensors that reach "
                        f"+-inf or NaN in calibration (e.g. -inf attention masks), which int8 "
                        f"cannot represent: {_listing(self.unbounded)}"
                    )
                    nodes = self.float_nodes(exclude)
                    raw = self._quantize(stage / "model.onnx", nodes)
            proto = raw.proto
            if nodes:
                proto = _copy(raw.proto)
                _keep_float(proto, self.source.proto, nodes)
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
        with _ort_errors(step.name, hint), _quiet_ort():
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
                use_external_data_format=_needs_external(self.source),
                calibrate_method=getattr(CalibrationMethod, _METHODS[step.method]),
                extra_options=options,
                calibration_cache_path=str(self.cache),
            )
        return Model.load(target)


# --- sensitivity ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeSensitivity:
    """How much int8 hurts one node.

    ``error``: normalized MSE (sum of squared error / sum of squares of the float output) of
    the node's output when it alone runs quantized: its float inputs pass through the quantized
    model's Q/DQ pairs, its weights are the quantized model's. ``cosine``: cosine similarity of
    the same. ``accumulated``: normalized MSE of the node's output inside the quantized model
    (upstream errors included). ``weights``: elements of its quantized constant inputs.
    """

    node: str
    op_type: str
    error: float
    cosine: float
    accumulated: float | None
    weights: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "op_type": self.op_type,
            "error": self.error,
            "cosine": self.cosine,
            "accumulated": self.accumulated,
            "weights": self.weights,
        }


def rank_sensitivity(
    fp32: Model,
    quantized: Model,
    feeds: Sequence[Mapping[str, np.ndarray]],
    *,
    by: Literal["error", "error_per_weight"] = "error",
) -> list[NodeSensitivity]:
    """The quantized nodes of a QDQ model, most sensitive to int8 first.

    Each node of ``quantized`` that reads a DequantizeLinear output and has a namesake of the
    same op in ``fp32`` is measured in isolation: a copy of it inside ``fp32`` reads the float
    inputs through the quantized model's own Q/DQ parameters and weights, so an error there is
    that node's alone. ``by="error_per_weight"`` divides by the weight count (excluding a big
    layer costs more speed). A model without Q/DQ nodes (dynamic int8) gives an empty list.
    """
    if not feeds:
        raise UsageError("rank_sensitivity needs at least one feed set")
    with contextlib.ExitStack() as stack:
        fp32_proto, q_proto = _inline(fp32), _inline(quantized)
        augmented, probes = _probe_model(fp32_proto, q_proto)
        if not probes:
            return []
        exposing = _with_outputs(q_proto, [o for p in probes for o in p.q_outputs])
        probe_runner = OrtRunner(_runnable(augmented, stack))
        q_runner = OrtRunner(_runnable(exposing, stack))
        stats = {p.node: _Stats() for p in probes}
        for feed in feeds:
            probe_values = probe_runner.run(feed)
            q_values = q_runner.run(feed)
            for p in probes:
                for ref, probe, q in zip(p.ref_outputs, p.probe_outputs, p.q_outputs, strict=True):
                    if ref and ref in probe_values and probe_values[ref].dtype.kind == "f":
                        stats[p.node].add(probe_values[ref], probe_values[probe], q_values.get(q))
    ranking = [
        NodeSensitivity(p.node, p.op_type, *stats[p.node].result(), weights=p.weights)
        for p in probes
        if stats[p.node].measured
    ]

    def score(s: NodeSensitivity) -> float:
        return s.error / max(s.weights, 1) if by == "error_per_weight" else s.error

    return sorted(ranking, key=score, reverse=True)


def exclude_until(
    fp32: Model,
    build: Callable[[list[str]], Model],
    judge: Callable[[Model], bool],
    ranking: Sequence[NodeSensitivity],
    max_excluded: int | None = None,
    *,
    label: str = "int8_static",
) -> tuple[Model, list[str]]:
    """Keep the k most sensitive nodes in float, k growing until ``judge`` accepts the model.

    k grows one at a time while there are at most 8 candidates, else doubles (1, 2, 4, ...)
    and then bisects back to the smallest passing k, so a passing k costs about 2 log2(k)
    builds. Candidates are the ranked nodes that ``fp32`` (the float model ``build`` quantizes)
    has. Returns the accepted model and the excluded node names; raises PassError when no k up
    to ``max_excluded`` passes.
    """
    present = {n.name for n in fp32.proto.graph.node}
    names = [r.node for r in ranking if r.node in present]
    limit = len(names) if max_excluded is None else min(len(names), max_excluded)
    if limit < 1:
        raise PassError(
            f"{label}: no quantized node to keep in float",
            hint="rank the nodes of the model that was quantized (its pre-processed source)",
        )
    built: dict[int, Model] = {}

    def passes(k: int) -> bool:
        built[k] = build(names[:k])
        return judge(built[k])

    failed, k = 0, 1
    while not passes(k):
        failed = k
        if k >= limit:
            raise PassError(
                f"{label}: still out of budget with the {limit} most sensitive nodes in float",
                hint="try per_channel=true, method='entropy', more calibration data, or "
                "int8_dynamic",
            )
        k = min(limit, k + 1 if len(names) <= 8 else 2 * k)
    low, high = failed + 1, k  # smallest passing k lies in [low, high]
    while low < high:
        mid = (low + high) // 2
        if passes(mid):
            high = mid
        else:
            low = mid + 1
    return built[high], names[:high]


# --- sensitivity internals -----------------------------------------------------------------


@dataclass
class _Probe:
    node: str
    op_type: str
    ref_outputs: list[str]
    probe_outputs: list[str]
    q_outputs: list[str]
    weights: int


@dataclass
class _Stats:
    sse: float = 0.0
    ssr: float = 0.0
    ssp: float = 0.0
    dot: float = 0.0
    acc_sse: float = 0.0
    acc_ssr: float = 0.0
    accumulated: bool = True
    measured: bool = False

    def add(self, ref: np.ndarray, probe: np.ndarray, q: np.ndarray | None) -> None:
        """Accumulate one output; where the float value is finite and the quantized one is
        not (an int8 range of inf gives NaN), the error is infinite."""
        r = np.asarray(ref, np.float64).ravel()
        p = np.asarray(probe, np.float64).ravel()
        keep = np.isfinite(r)
        r, p = r[keep], p[keep]
        if not np.all(np.isfinite(p)):
            self.sse = math.inf
            p = np.nan_to_num(p, nan=0.0, posinf=0.0, neginf=0.0)
        self.sse += float(np.sum((p - r) ** 2))
        self.ssr += float(np.sum(r**2))
        self.ssp += float(np.sum(p**2))
        self.dot += float(np.dot(r, p))
        self.measured = True
        if q is None or np.shape(q) != np.shape(ref):
            self.accumulated = False
            return
        c = np.asarray(q, np.float64).ravel()[keep]
        if not np.all(np.isfinite(c)):
            self.acc_sse = math.inf
            c = np.nan_to_num(c, nan=0.0, posinf=0.0, neginf=0.0)
        self.acc_sse += float(np.sum((c - r) ** 2))
        self.acc_ssr += float(np.sum(r**2))

    def result(self) -> tuple[float, float, float | None]:
        error = _ratio(self.sse, self.ssr)
        norms = math.sqrt(self.ssr * self.ssp)
        cosine = self.dot / norms if norms else (1.0 if self.sse == 0 else 0.0)
        accumulated = _ratio(self.acc_sse, self.acc_ssr) if self.accumulated else None
        return error, cosine, accumulated


def _ratio(error: float, scale: float) -> float:
    if scale > 0:
        return error / scale
    return 0.0 if error == 0 else math.inf


def _probe_model(
    fp32: onnx.ModelProto, qdq: onnx.ModelProto
) -> tuple[onnx.ModelProto, list[_Probe]]:
    """``fp32`` plus, for each quantized node, a copy reading its float inputs through the
    quantized model's Q/DQ parameters; the float outputs and the copies' are graph outputs."""
    import onnx

    aug = _copy(fp32)
    q_init = {t.name: t for t in qdq.graph.initializer}
    q_producer = {out: n for n in qdq.graph.node for out in n.output if out}
    f_nodes = {n.name: n for n in fp32.graph.node if n.name}
    copied: set[str] = set()

    def const(name: str) -> str:
        if not name:
            return ""
        new = _PROBE + name
        if new not in copied:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(q_init[name])
            tensor.name = new
            aug.graph.initializer.append(tensor)
            copied.add(new)
        return new

    probes: list[_Probe] = []
    for k, node in enumerate(qdq.graph.node):
        ref = f_nodes.get(node.name)
        if node.op_type in _QDQ_OPS or ref is None or not _same_shape(ref, node):
            continue
        added: list[onnx.NodeProto] = []
        inputs: list[str] = []
        weights = 0
        for i, name in enumerate(node.input):
            dq = q_producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                inputs.append(ref.input[i])
                continue
            if any(p and p not in q_init for p in dq.input[1:]):
                break
            prefix = f"{_PROBE}{k}/{i}/"
            if dq.input[0] in q_init:
                weights += math.prod(q_init[dq.input[0]].dims)
                source = const(dq.input[0])
            else:
                quant = q_producer.get(dq.input[0])
                if quant is None or quant.op_type != "QuantizeLinear":
                    break
                if any(p and p not in q_init for p in quant.input[1:]):
                    break
                source = prefix + "q"
                added.append(
                    _node_like(
                        quant, [ref.input[i], *map(const, quant.input[1:])], [source], prefix + "Q"
                    )
                )
            added.append(
                _node_like(dq, [source, *map(const, dq.input[1:])], [prefix + "dq"], prefix + "DQ")
            )
            inputs.append(prefix + "dq")
        else:
            if not added:
                continue
            outputs = [f"{_PROBE}{k}/out{j}" if o else "" for j, o in enumerate(node.output)]
            added.append(_node_like(node, inputs, outputs, f"{_PROBE}{k}/{node.name}"))
            aug.graph.node.extend(added)
            probes.append(
                _Probe(
                    node.name,
                    node.op_type,
                    list(ref.output),
                    outputs,
                    list(node.output),
                    weights,
                )
            )
    _merge_opsets(aug, qdq)
    names = [n for p in probes for n in (*p.ref_outputs, *p.probe_outputs) if n]
    return _with_outputs(aug, names), probes


def _same_shape(a: onnx.NodeProto, b: onnx.NodeProto) -> bool:
    return (
        a.op_type == b.op_type
        and a.domain == b.domain
        and len(a.input) == len(b.input)
        and len(a.output) == len(b.output)
    )


def _node_like(
    node: onnx.NodeProto, inputs: Sequence[str], outputs: Sequence[str], name: str
) -> onnx.NodeProto:
    import onnx

    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    copy.name = name
    del copy.input[:]
    del copy.output[:]
    copy.input.extend(inputs)
    copy.output.extend(outputs)
    return copy


def _merge_opsets(target: onnx.ModelProto, other: onnx.ModelProto) -> None:
    """Give ``target`` every opset ``other`` imports, at the higher of the two versions."""
    versions = {o.domain: o.version for o in target.opset_import}
    for o in other.opset_import:
        versions[o.domain] = max(versions.get(o.domain, 0), o.version)
    del target.opset_import[:]
    for domain, version in versions.items():
        target.opset_import.add(domain=domain, version=version)
    target.ir_version = max(target.ir_version, other.ir_version)


def _with_outputs(proto: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    import onnx

    out = _copy(proto)
    present = {o.name for o in out.graph.output}
    for name in dict.fromkeys(names):
        if name and name not in present:
            out.graph.output.append(onnx.ValueInfoProto(name=name))
    return out


# --- float for excluded nodes --------------------------------------------------------------


def _unbounded_nodes(cache: Path, source: onnx.ModelProto) -> list[str]:
    """Nodes producing or reading a tensor whose range in ORT's calibration cache is not finite.

    ORT quantizes such a tensor anyway, with an infinite scale, and the Q/DQ pair then turns
    every value into 0 or NaN; excluding its producer and readers leaves it unquantized.
    """
    import json

    try:
        ranges = json.loads(cache.read_text())["data"]
        unbounded = {
            name
            for name, item in ranges.items()
            if not all(
                math.isfinite(float(v)) for key in ("lowest", "highest") for v in item[key]["data"]
            )
        }
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [
        node.name
        for node in source.graph.node
        if node.name and unbounded & {*node.input, *node.output}
    ]


def _listing(names: Sequence[str], shown: int = 6) -> str:
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def _keep_float(qdq: onnx.ModelProto, fp32: onnx.ModelProto, nodes: Collection[str]) -> None:
    """Rewire each node in ``nodes`` to read its activations in float, in place.

    ORT's ``nodes_to_exclude`` leaves a node's weights in float, but its activation inputs
    still come from the Q/DQ pair its producer quantizes for the other consumers. The node
    then reads the tensor that pair quantizes, unless ORT folded a Relu/Clip into the pair (the
    tensor is then the pre-activation value): that activation is applied again in float. Q/DQ
    pairs no node reads any more are removed.
    """
    graph = qdq.graph
    producer = {out: n for n in graph.node for out in n.output if out}
    f_producer = {out: n for n in fp32.graph.node for out in n.output if out}
    f_nodes = {n.name: n for n in fp32.graph.node if n.name}
    q_names = {n.name for n in graph.node}
    available = {t.name for t in graph.initializer} | {i.name for i in graph.input} | set(producer)
    refolded: dict[str, str] = {}
    added: list[tuple[int, onnx.NodeProto]] = []
    for position, node in enumerate(graph.node):
        ref = f_nodes.get(node.name)
        if node.name not in nodes or ref is None or not _same_shape(ref, node):
            continue
        for i, name in enumerate(node.input):
            dq = producer.get(name)
            quant = producer.get(dq.input[0]) if dq is not None else None
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            if quant is None or quant.op_type != "QuantizeLinear":
                continue
            tensor, wanted = quant.input[0], ref.input[i]
            source, origin = producer.get(tensor), f_producer.get(wanted)
            if tensor == wanted and (source.name if source else None) == (
                origin.name if origin else None
            ):
                node.input[i] = tensor
            elif (
                origin is not None
                and origin.op_type in _FOLDED_ACTIVATIONS
                and origin.name not in q_names
                and tensor == wanted
                and all(not p or p in available for p in origin.input[1:])
            ):
                if wanted not in refolded:
                    refolded[wanted] = f"{wanted}/float"
                    activation = _node_like(
                        origin,
                        [tensor, *origin.input[1:]],
                        [refolded[wanted]],
                        f"{origin.name}/float",
                    )
                    added.append((position, activation))
                node.input[i] = refolded[wanted]
    for offset, (position, activation) in enumerate(added):
        graph.node.insert(position + offset, activation)
    _drop_dead_qdq(qdq)


def _drop_dead_qdq(proto: onnx.ModelProto) -> None:
    graph = proto.graph
    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [
            n for n in graph.node if n.op_type in _QDQ_OPS and not any(o in used for o in n.output)
        ]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    used |= {i.name for i in graph.input}
    keep = [t for t in graph.initializer if t.name in used]
    if len(keep) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(keep)


# --- shared helpers ------------------------------------------------------------------------


def _refuse_quantized(name: str, model: Model) -> None:
    ops = {op.split("::")[-1] for op in model.ops_histogram}
    found = sorted(ops & _INTEGER_OPS)
    if found:
        raise PassError(
            f"{name}: the model is already quantized (it has {', '.join(found)})",
            hint="quantize the float model",
        )


@contextlib.contextmanager
def _stage_dir(target: Path) -> Iterator[Path]:
    """A private directory next to ``target`` for ORT's files, removed afterwards (ORT writes
    scratch files beside its input, so it must never read the user's model in place)."""
    stage = target.parent / ".stage"
    stage.mkdir()
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _stage(
    name: str, model: Model, directory: Path, preprocess: bool, optimize: bool, notes: list[str]
) -> Model:
    """The model ORT will quantize, written to ``directory/model.onnx``: pre-processed by
    ``quant_pre_process`` when asked and when it works (again without its symbolic shape
    inference, which gives up on many exported transformers), else a plain copy."""
    target = directory / "model.onnx"
    if not preprocess:
        return model.save(target)
    problems: list[str] = []
    for skip_symbolic in (False, True):
        try:
            failures = _pre_process(model, target, optimize, skip_symbolic)
            staged = Model.load(target)
        except Exception as e:  # symbolic shape inference raises anything
            problems.append(_first_line(e))
            for stale in directory.iterdir():
                if stale.is_file():
                    stale.unlink()
            continue
        done = [
            "symbolic and ONNX shape inference" if not skip_symbolic else "ONNX shape inference"
        ]
        if optimize:
            done.append("no graph optimization (it failed)" if failures else "basic graph fusions")
        else:
            done.append(
                "no graph optimization: ORT's MatMul+Add fusion would leave Gemm unquantized"
            )
        if problems:
            done.append(f"symbolic shape inference failed: {problems[0]}")
        notes.append(f"pre-processed with ORT's quant_pre_process ({'; '.join(done)})")
        return staged
    notes.append(f"ORT's quant_pre_process failed ({problems[-1]}); quantized without it")
    return model.save(target)


def _pre_process(model: Model, target: Path, optimize: bool, skip_symbolic: bool) -> list[str]:
    """Run ``quant_pre_process``; the errors it only logs (a failed graph optimization)."""
    import logging

    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Collect(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.ERROR)
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    logger = logging.getLogger("onnxruntime.quantization.shape_inference")
    collect = Collect()
    logger.addHandler(collect)
    external = _needs_external(model)
    try:
        with _quiet_ort():
            quant_pre_process(
                str(model.path) if model.path is not None else model.proto,
                str(target),
                skip_optimization=not optimize,
                skip_symbolic_shape=skip_symbolic,
                save_as_external_data=external,
                all_tensors_to_one_file=True,
                external_data_location="model.onnx.data" if external else None,
            )
    finally:
        logger.removeHandler(collect)
    return collect.messages


def _map_nodes(
    name: str, nodes: Sequence[str], original: Model, staged: Model, notes: list[str]
) -> list[str]:
    """The names in the staged model of the user's ``nodes`` (ORT names a fused node after
    its first part, "fc1/MatMulAddFusion")."""
    before = {n.name for n in original.proto.graph.node}
    after = [n.name for n in staged.proto.graph.node]
    mapped: list[str] = []
    for node in nodes:
        if node not in before and node not in after:
            raise UsageError(
                f"{name}: nodes_to_exclude names {node!r}, which is not a node of the model",
                hint="take node names from `ferry inspect` or Netron",
            )
        found = [n for n in after if n == node or n.startswith(node + "/")]
        if not found:
            notes.append(f"node {node!r} was optimized away before quantization")
        mapped.extend(found)
    return list(dict.fromkeys(mapped))


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


@functools.cache
def x86_without_vnni() -> bool:
    """True on an x86 CPU whose flags (Linux /proc/cpuinfo) show no VNNI instructions."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return False
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "").split()
    return bool(flags) and not {"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags)


def _needs_external(model: Model) -> bool:
    return bool(model.external_files) or model.proto.ByteSize() > _EXTERNAL_OVER


def _copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(proto)
    return out


def _inline(model: Model) -> onnx.ModelProto:
    """A copy of the model's proto with its external data read in."""
    proto = _copy(model.proto)
    if model.external_files and model.path is not None:
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(proto, str(model.path.parent))
    return proto


def _runnable(proto: onnx.ModelProto, stack: contextlib.ExitStack) -> Model:
    """A Model ORT can load: in memory, or past protobuf's limit in a temporary directory."""
    import tempfile

    if proto.ByteSize() < _EXTERNAL_OVER:
        return Model.from_proto(proto)
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="onnxferry-sens-")))
    return Model.from_proto(proto).save(tmp / "model.onnx", external_data=True)


@contextlib.contextmanager
def _ort_errors(name: str, hint: str | None = None) -> Iterator[None]:
    """ORT quantizer failures (any exception type) as one-line PassErrors."""
    try:
        yield
    except FerryError:
        raise
    except Exception as e:
        raise PassError(
            f"{name}: onnxruntime cannot quantize this model: {_first_line(e)}",
            hint=hint or "exclude the failing nodes (nodes_to_exclude) or restrict op_types",
        ) from e


@contextlib.contextmanager
def _quiet_ort() -> Iterator[None]:
    """Drop ORT's advice to pre-process, which its quantizer logs on the root logger (the
    passes pre-process by default and say so in their notes when they do not), the progress
    its calibrators print to stdout (which carries ``--json`` output), and numpy's warnings
    about its range arithmetic on infinite ranges (the nodes around those stay in float)."""
    import io
    import logging

    def advice(record: logging.LogRecord) -> bool:
        return "consider" not in str(record.msg) or "pre-process" not in str(record.msg)

    root = logging.getLogger()
    root.addFilter(advice)
    try:
        with contextlib.redirect_stdout(io.StringIO()), np.errstate(all="ignore"):
            yield
    finally:
        root.removeFilter(advice)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:300]
