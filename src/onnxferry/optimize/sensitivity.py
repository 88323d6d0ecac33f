"""Which nodes int8 hurts most: per-node error of a QDQ model against its float source, and
the search for the fewest nodes to keep in float.

    ranking = rank_sensitivity(fp32, qdq, feeds)            # most sensitive first
    ranking = rank_dynamic_sensitivity(fp32, feeds, per_channel=True)   # for dynamic int8
    model, kept = exclude_until(fp32, build, judge, ranking, max_excluded=8)
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..errors import UsageError
from ..feeds import feeds_digest
from ..graphs import copy_model, expose, inlined, runnable
from ..model import Model
from ..runtime import OrtRunner
from .base import PassError

if TYPE_CHECKING:
    import onnx

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
_PROBE = "ferry.sens/"
_REMEMBERED = 32
"""Rankings kept in memory (a few hundred bytes each), most recently used first out last."""


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
    key = ("qdq", fp32.digest, quantized.digest, feeds_digest(feeds), by)
    return _rankings.get(key, lambda: _rank_qdq(fp32, quantized, feeds, by))


def _rank_qdq(
    fp32: Model,
    quantized: Model,
    feeds: Sequence[Mapping[str, np.ndarray]],
    by: Literal["error", "error_per_weight"],
) -> list[NodeSensitivity]:
    with contextlib.ExitStack() as stack:
        fp32_proto, q_proto = inlined(fp32), inlined(quantized)
        augmented, probes = _probe_model(fp32_proto, q_proto)
        if not probes:
            return []
        expose(q_proto, [o for p in probes for o in p.q_outputs])
        probe_runner = OrtRunner(stack.enter_context(runnable(augmented)))
        q_runner = OrtRunner(stack.enter_context(runnable(q_proto)))
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
    return _ranked(ranking, by)


def rank_dynamic_sensitivity(
    fp32: Model,
    feeds: Sequence[Mapping[str, np.ndarray]],
    *,
    per_channel: bool = False,
    reduce_range: bool = False,
    by: Literal["error", "error_per_weight"] = "error_per_weight",
) -> list[NodeSensitivity]:
    """The nodes dynamic int8 quantizes (MatMul and Gemm with a constant 2-D weight, Gather
    from a constant table), most sensitive first.

    Each is measured in isolation by doing what ORT's dynamic int8 does to it alone: a MatMul's
    float input quantized to uint8 over that tensor's own range (DynamicQuantizeLinear), its
    weight to symmetric int8 per tensor or per output column (7-bit with ``reduce_range``); a
    Gather's table to int8 per tensor. Compared with the float result on ``feeds``.
    ``by="error_per_weight"`` (the default) divides by the weight count, which is proportional
    to a MatMul's FLOPs: the nodes it ranks first buy the most accuracy for the least speed
    when kept in float.
    """
    if not feeds:
        raise UsageError("rank_dynamic_sensitivity needs at least one feed set")
    key = ("dynamic", fp32.digest, feeds_digest(feeds), per_channel, reduce_range, by)
    return _rankings.get(key, lambda: _rank_dynamic(fp32, feeds, per_channel, reduce_range, by))


def _rank_dynamic(
    fp32: Model,
    feeds: Sequence[Mapping[str, np.ndarray]],
    per_channel: bool,
    reduce_range: bool,
    by: Literal["error", "error_per_weight"],
) -> list[NodeSensitivity]:
    from onnx import numpy_helper

    with contextlib.ExitStack() as stack:
        proto = inlined(fp32)
        constants = {
            t.name: numpy_helper.to_array(t)
            for t in proto.graph.initializer
            if t.data_type in (1, 10, 11, 16)  # float, float16, double, bfloat16
        }
        found = (_simulation(n, constants, per_channel, reduce_range) for n in proto.graph.node)
        simulated = [sim for sim in found if sim is not None]
        if not simulated:
            return []
        reads = [name for sim in simulated for name in sim.reads]
        expose(proto, reads)
        runner = OrtRunner(stack.enter_context(runnable(proto)))
        stats = {sim.node.name: _Stats() for sim in simulated}
        for feed in feeds:
            values = {**feed, **runner.run(feed)}
            for sim in simulated:
                compared = sim.compare(values)
                if compared is not None:
                    stats[sim.node.name].add(*compared, None)
    ranking = [
        NodeSensitivity(
            sim.node.name, sim.node.op_type, *stats[sim.node.name].result(), weights=sim.weights
        )
        for sim in simulated
        if stats[sim.node.name].measured
    ]
    return _ranked(ranking, by)


class _Rankings:
    """Rankings by what they are a function of: the models' bytes, the feeds and the options.

    An Optuna study asks for the same ranking in every trial that samples ``exclude_sensitive``
    (each trial stages its own copy of the model, byte for byte the same), and a ranking costs
    a session per model plus a run per feed set.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._kept: OrderedDict[tuple[Any, ...], list[NodeSensitivity]] = OrderedDict()
        self.computed = 0

    def get(
        self, key: tuple[Any, ...], compute: Callable[[], list[NodeSensitivity]]
    ) -> list[NodeSensitivity]:
        with self._lock:
            found = self._kept.get(key)
            if found is not None:
                self._kept.move_to_end(key)
                return list(found)
        ranking = compute()
        with self._lock:
            self.computed += 1
            self._kept[key] = ranking
            while len(self._kept) > self._size:
                self._kept.popitem(last=False)
        return list(ranking)

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()


_rankings = _Rankings(_REMEMBERED)


@dataclass
class _Simulated:
    """One node as dynamic int8 runs it: what it reads at run time, and the comparison."""

    node: onnx.NodeProto
    reads: list[str]
    weights: int
    compare: Callable[[Mapping[str, np.ndarray]], tuple[np.ndarray, np.ndarray] | None]


def _simulation(
    node: onnx.NodeProto,
    constants: Mapping[str, np.ndarray],
    per_channel: bool,
    reduce_range: bool,
) -> _Simulated | None:
    if not node.name:
        return None
    attrs = {a.name: a for a in node.attribute}
    if node.op_type in ("MatMul", "Gemm") and len(node.input) >= 2:
        w = constants.get(node.input[1])
        if w is None or w.ndim != 2 or ("transA" in attrs and attrs["transA"].i):
            return None
        weight = np.ascontiguousarray(w.T if "transB" in attrs and attrs["transB"].i else w)
        weight = weight.astype(np.float32)
        fake = _fake_int8(weight, per_channel, reduce_range)
        source = node.input[0]

        def matmul(values: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
            a = values.get(source)
            if a is None or a.dtype.kind != "f":
                return None
            a32 = a.astype(np.float32, copy=False)
            return a32 @ weight, _fake_uint8(a32) @ fake

        return _Simulated(node, [source], weight.size, matmul)
    if node.op_type == "Gather" and node.input[0] in constants:
        table = constants[node.input[0]].astype(np.float32)
        fake_table = _fake_int8(table.reshape(table.shape[0], -1), False, reduce_range)
        fake_table = fake_table.reshape(table.shape)
        axis = attrs["axis"].i if "axis" in attrs else 0
        indices = node.input[1]

        def gather(values: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
            idx = constants.get(indices, values.get(indices))
            if idx is None:
                return None
            return np.take(table, idx, axis=axis), np.take(fake_table, idx, axis=axis)

        return _Simulated(node, [] if indices in constants else [indices], table.size, gather)
    return None


def _ranked(
    ranking: list[NodeSensitivity], by: Literal["error", "error_per_weight"]
) -> list[NodeSensitivity]:
    def score(s: NodeSensitivity) -> float:
        return s.error / max(s.weights, 1) if by == "error_per_weight" else s.error

    return sorted(ranking, key=score, reverse=True)


def _fake_uint8(a: np.ndarray) -> np.ndarray:
    """``a`` through DynamicQuantizeLinear and back: uint8 over [min(a, 0), max(a, 0)]."""
    low, high = min(float(a.min()), 0.0), max(float(a.max()), 0.0)
    if not (math.isfinite(low) and math.isfinite(high)) or high == low:
        return a
    scale = (high - low) / 255.0
    zero = np.clip(np.round(-low / scale), 0, 255)
    q = np.clip(np.round(a / scale) + zero, 0, 255)
    out: np.ndarray = ((q - zero) * scale).astype(np.float32)
    return out


def _fake_int8(w: np.ndarray, per_channel: bool, reduce_range: bool) -> np.ndarray:
    """``w`` [K, N] through symmetric int8 and back: one scale, or one per output column."""
    bound = 64.0 if reduce_range else 127.0
    peak = np.abs(w).max(axis=0, keepdims=True) if per_channel else np.abs(w).max()
    scale = np.where(peak > 0, peak / bound, 1.0)
    return (np.clip(np.round(w / scale), -bound, bound) * scale).astype(np.float32)


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

    aug = copy_model(fp32)
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
        if node.op_type in QDQ_OPS or ref is None or not same_shape(ref, node):
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
                    node_like(
                        quant, [ref.input[i], *map(const, quant.input[1:])], [source], prefix + "Q"
                    )
                )
            added.append(
                node_like(dq, [source, *map(const, dq.input[1:])], [prefix + "dq"], prefix + "DQ")
            )
            inputs.append(prefix + "dq")
        else:
            if not added:
                continue
            outputs = [f"{_PROBE}{k}/out{j}" if o else "" for j, o in enumerate(node.output)]
            added.append(node_like(node, inputs, outputs, f"{_PROBE}{k}/{node.name}"))
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
    expose(aug, names)
    return aug, probes


def same_shape(a: onnx.NodeProto, b: onnx.NodeProto) -> bool:
    return (
        a.op_type == b.op_type
        and a.domain == b.domain
        and len(a.input) == len(b.input)
        and len(a.output) == len(b.output)
    )


def node_like(
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
