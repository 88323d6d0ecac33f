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
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import platform
import shutil
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from ..errors import FerryError, UsageError, one_line
from ..graphs import PROTO_LIMIT, copy_model, inlined
from ..model import Model
from .base import Pass, PassContext, PassError, PassResult, param
from .calibration import FeedsReader, by_shape, checked_calibration
from .graph import (
    conform,
    conformed,
    constants_to_initializers,
    convert_opset,
    default_opset,
    save_output,
)
from .sensitivity import (
    QDQ_OPS,
    NodeSensitivity,
    node_like,
    rank_dynamic_sensitivity,
    rank_sensitivity,
    same_shape,
)

if TYPE_CHECKING:
    import onnx

_QTYPES = {"int8": "QInt8", "uint8": "QUInt8"}
_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
_INTEGER_OPS = frozenset(
    {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger"}
    | {"QLinearMatMul", "QLinearConv", "QGemm", "QAttention", "DynamicQuantizeMatMul"}
)
_FOLDED_ACTIVATIONS = ("Relu", "Clip")
_RANK_SAMPLES = 16
"""Feed sets used to rank sensitivity."""
_PER_CHANNEL_OPSET = 13
"""DequantizeLinear takes an ``axis`` (one scale per channel) from this opset on."""


# --- passes --------------------------------------------------------------------------------


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

        _refuse_quantized(self.name, model)
        target = ctx.scratch(self.name)
        notes: list[str] = []
        details: dict[str, Any] = {}
        with _stage_dir(target) as stage:
            prepared = _prepared(self.name, model, stage / "prepared", False, notes)
            source = _stage(self.name, prepared, stage, self.preprocess, False, notes)
            excluded = _map_nodes(self.name, self.nodes_to_exclude, model, source, notes)
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
            excluded = _with_gemm_rewrites(excluded, source)
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
        _refuse_quantized(self.name, model)
        feeds = ctx.calibration if ctx.calibration is not None else ctx.feeds
        sets, _ = by_shape(checked_calibration(feeds, model.signature, self.calibration_samples))
        notes: list[str] = []
        directory = ctx.scratch(f"{self.name}-source").parent
        prepared = _prepared(self.name, model, directory / "prepared", self.per_channel, notes)
        source = _stage(self.name, prepared, directory, self.preprocess, True, notes)
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
            proto = copy_model(raw.proto)
            if nodes:
                _keep_float(proto, self.source.proto, nodes)
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
        if node.name not in nodes or ref is None or not same_shape(ref, node):
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
                    activation = node_like(
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
            n for n in graph.node if n.op_type in QDQ_OPS and not any(o in used for o in n.output)
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


def _prepared(
    name: str, model: Model, directory: Path, per_channel_qdq: bool, notes: list[str]
) -> Model:
    """``model`` as ORT's quantizer needs it, saved in ``directory`` (``model`` itself when it
    needs nothing): tensors held in Constant nodes moved to initializers (Paddle2ONNX exports
    weights so, and ORT quantizes initializers only), and the opset raised with onnx's version
    converter where the quantized model would not be valid at the model's own (``notes`` say
    what was done)."""
    opset = default_opset(model.proto)
    wanted, why = _quantizer_opset(opset, per_channel_qdq)
    if wanted == opset and not any(n.op_type == "Constant" for n in model.proto.graph.node):
        return model
    proto = inlined(model)
    moved = constants_to_initializers(proto.graph)
    if moved:
        notes.append(
            f"moved {moved} tensor(s) held in Constant nodes to initializers: ORT's quantizer "
            "quantizes initializers only"
        )
    if wanted != opset:
        proto = convert_opset(name, proto, wanted)
        notes.append(
            f"raised the opset from {opset} to {wanted} with onnx's version converter: {why}"
        )
    elif not moved:
        return model
    return save_output(name, proto, model, directory / "model.onnx")


def _quantizer_opset(opset: int, per_channel_qdq: bool) -> tuple[int, str]:
    """The opset to quantize at, and why when it is not ``opset``: 13 for per-channel Q/DQ
    (DequantizeLinear's ``axis``), 11 below 10 (ORT's quantizer raises such models to 11
    itself, unreported). Dynamic int8 writes no per-channel DequantizeLinear: it keeps 10+."""
    if per_channel_qdq and opset < _PER_CHANNEL_OPSET:
        why = "per-channel DequantizeLinear (its axis attribute) needs opset 13"
        return _PER_CHANNEL_OPSET, why
    if opset < 10:
        return 11, "onnxruntime's quantizer needs opset 10 or later"
    return opset, ""


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
            problems.append(one_line(e, line="first"))
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
        # On failure ORT's symbolic shape inference dumps "sym_shape_infer_temp.onnx" and
        # uuid-named data files into the working directory; keep them in the stage folder.
        with _quiet_ort(), _working_directory(target.resolve().parent):
            quant_pre_process(
                str(Path(model.path).resolve()) if model.path is not None else model.proto,
                str(target.resolve()),
                skip_optimization=not optimize,
                skip_symbolic_shape=skip_symbolic,
                save_as_external_data=external,
                all_tensors_to_one_file=True,
                external_data_location="model.onnx.data" if external else None,
            )
    finally:
        logger.removeHandler(collect)
    return collect.messages


@contextlib.contextmanager
def _working_directory(path: Path) -> Iterator[None]:
    """``contextlib.chdir`` (Python 3.11+) for 3.10 too."""
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


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


def _with_gemm_rewrites(nodes: list[str], source: Model) -> list[str]:
    """ORT's dynamic quantizer rewrites a Gemm into "<name>_MatMul" + Add before it reads
    ``nodes_to_exclude``, so an excluded Gemm must be named both ways."""
    gemms = {n.name for n in source.proto.graph.node if n.op_type == "Gemm"}
    extra = [f"{n}_MatMul" for n in nodes if n in gemms]
    return list(dict.fromkeys([*nodes, *extra]))


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
    """Whether ORT's quantizer gets the model with external data: it has some, or it is past
    three quarters of protobuf's limit (the quantizer's working copies grow)."""
    return bool(model.external_files) or model.proto.ByteSize() > PROTO_LIMIT // 4 * 3


@contextlib.contextmanager
def _ort_errors(name: str, hint: str | None = None) -> Iterator[None]:
    """ORT quantizer failures (any exception type) as one-line PassErrors."""
    try:
        yield
    except FerryError:
        raise
    except Exception as e:
        raise PassError(
            f"{name}: onnxruntime cannot quantize this model: {one_line(e, line='first')}",
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
