"""Float16: weights and arithmetic in half precision; inputs and outputs stay float32.

    result = Float16().apply(model, PassContext(workdir, feeds))
    result.details["blocked_nodes"]       # nodes kept in float32: their values leave fp16's range
    Float16(op_block_list=("Softmax",), node_block_list=("head/MatMul",), auto_block_overflow=False)

The conversion is ONNX Runtime's ``float16.convert_float_to_float16`` (keep_io_types=True).
With ``auto_block_overflow`` the float32 model first runs on the validation feeds (generated
ones when there are none) with every intermediate tensor exposed; a tensor float16 cannot hold
(finite values past 65504, or a tensor whose every value is below float16's smallest normal
number 2**-14) keeps its producer and its readers in float32. A float32 initializer or graph
input out of range keeps its readers in float32 too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import one_line
from ..feeds import plan_feeds
from ..graphs import (
    constants_to_initializers,
    copy_model,
    expose,
    inlined,
    iter_graphs,
    iter_initializers,
    walk_graphs,
)
from ..model import Model
from ..runtime import SessionConfig, ort_error_message, run_session, session_options
from .base import Pass, PassContext, PassError, PassResult, param
from .output import graph_key, lifted_weights, save_output

if TYPE_CHECKING:
    import onnx

FP16_MAX = 65504.0
"""The largest finite float16 value."""

FP16_SMALLEST_NORMAL = 2.0**-14
"""Below this, float16 values are subnormal (fewer significant bits) or flush to zero."""

PROBE_FEED_SETS = 8
"""At most this many validation feed sets are run to find values out of float16's range."""

_FLOAT, _FLOAT16 = 1, 10  # onnx.TensorProto.FLOAT, FLOAT16


@dataclass(frozen=True)
class Float16(Pass):
    """Convert float32 weights and arithmetic to float16; inputs and outputs stay float32.

    This is ONNX Runtime's float16 converter, with the nodes whose values leave float16's range
    on the validation feeds kept in float32 (``auto_block_overflow``). Ops float16 cannot
    serve well stay float32 too: the converter's default block list (TopK, Range, CumSum, ...)
    plus ``op_block_list``, and the nodes named in ``node_block_list``.
    """

    name: ClassVar[str] = "fp16"
    family: ClassVar[str] = "fp16"
    op_block_list: Sequence[str] = param(
        (), "op types kept in float32, added to the converter's default list"
    )
    node_block_list: Sequence[str] = param((), "names of nodes kept in float32")
    auto_block_overflow: bool = param(
        True,
        "run the float32 model on the validation feeds and keep in float32 the nodes whose "
        "values overflow or underflow float16",
    )

    def apply(self, model: Model, ctx: PassContext) -> PassResult:
        import onnx
        from onnxruntime.transformers.float16 import (
            DEFAULT_OP_BLOCK_LIST,
            convert_float_to_float16,
        )

        named = _named_copy(model.proto)
        names = {n.name for n in named.graph.node}
        unknown = [n for n in self.node_block_list if n not in names]
        if unknown:
            raise PassError(
                f"{self.name}: node_block_list names nodes the model does not have: "
                f"{', '.join(map(repr, unknown))}",
                hint="list node names as `ferry inspect` or Netron shows them",
            )
        # types for the converter; inference runs before the data is read in, while it is small
        proto = inlined(model, onnx.shape_inference.infer_shapes(named))
        if not _has_float32(proto):
            raise PassError(
                f"{self.name}: the model has no float32 tensors to convert to float16",
                hint="fp16 applies to models that compute in float32; leave it out of the recipe",
            )
        notes = lifted_weights(constants_to_initializers(proto.graph))  # ranges, counts
        details: dict[str, Any] = {}
        auto: dict[str, str] = {}
        if self.auto_block_overflow:
            feed_sets = list(ctx.feeds)[:PROBE_FEED_SETS]
            if not feed_sets:
                plan = plan_feeds(model)
                feed_sets = [plan.feeds(seed=seed) for seed in range(2)]
                notes.append(
                    "no validation feeds: float16 ranges were probed on generated random "
                    "inputs; pass real feeds for a faithful block list"
                )
            for feeds in feed_sets:
                model.signature.validate(feeds)
            peaks = self._probe(named, model, feed_sets)
            peaks.update(_initializer_peaks(proto))
            auto, out_of_range = _nodes_to_block(proto.graph, peaks)
            details["out_of_range"] = out_of_range
            if auto:
                shown = ", ".join(f"{n} ({why})" for n, why in sorted(auto.items())[:10])
                more = f" and {len(auto) - 10} more" if len(auto) > 10 else ""
                notes.append(
                    f"kept {len(auto)} node(s) in float32 because their values leave "
                    f"float16's range on {len(feed_sets)} feed set(s): {shown}{more}"
                )
        blocked = sorted(set(self.node_block_list) | set(auto))
        try:
            converted = convert_float_to_float16(
                proto,
                keep_io_types=True,
                disable_shape_infer=True,
                op_block_list=[*DEFAULT_OP_BLOCK_LIST, *self.op_block_list],
                node_block_list=blocked,
            )
        except Exception as e:
            raise PassError(
                f"{self.name}: onnxruntime's float16 converter failed: {one_line(e)}",
                hint="add the failing ops to op_block_list, or leave fp16 out of the recipe",
            ) from e
        _skip_round_trips(converted.graph, names)
        _toposort(self.name, converted.graph)
        result = save_output(self.name, converted, model, ctx)
        halves = sum(t.data_type == _FLOAT16 for t in iter_initializers(result.proto))
        floats = sum(t.data_type == _FLOAT for t in iter_initializers(result.proto))
        details |= {
            "blocked_nodes": blocked,
            "auto_blocked_nodes": sorted(auto),
            "op_block_list": sorted({*DEFAULT_OP_BLOCK_LIST, *self.op_block_list}),
            "float16_initializers": halves,
            "float32_initializers": floats,
        }
        notes.append(
            f"{halves} initializer(s) in float16, {floats} kept in float32; "
            "inputs and outputs stay float32"
        )
        changed = graph_key(model.proto) != graph_key(result.proto)
        return PassResult(result, changed, notes, details)

    def _probe(
        self, named: onnx.ModelProto, model: Model, feed_sets: Sequence[Mapping[str, np.ndarray]]
    ) -> dict[str, float]:
        """The largest finite |value| of every float32 graph input and main-graph node output
        over the feed sets, from the float32 model with every intermediate exposed."""
        import onnxruntime as ort

        exposed = copy_model(named)
        expose(exposed, [out for node in named.graph.node for out in node.output])
        opts = session_options(SessionConfig(graph_optimization="basic"), model)
        if model.path is not None and model.external_files:
            opts.add_session_config_entry(
                "session.model_external_initializers_file_folder_path", str(model.path.parent)
            )
        try:
            session = ort.InferenceSession(
                exposed.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as e:
            raise PassError(
                f"{self.name}: cannot run the float32 model to find values out of float16's "
                f"range: {ort_error_message(e)}",
                hint="set auto_block_overflow = false and block nodes with node_block_list",
            ) from e
        del exposed
        output_names = [o.name for o in session.get_outputs()]
        peaks: dict[str, float] = {}
        for feeds in feed_sets:
            for name, array in feeds.items():
                _track(peaks, name, array)
            values = run_session(session, output_names, feeds)
            for name, value in zip(output_names, values, strict=True):
                _track(peaks, name, value)
        return peaks


def _track(peaks: dict[str, float], name: str, value: Any) -> None:
    if not isinstance(value, np.ndarray) or value.dtype != np.float32 or not value.size:
        return
    magnitude = np.abs(value)
    finite = magnitude[np.isfinite(magnitude)]
    peak = float(finite.max()) if finite.size else 0.0
    peaks[name] = max(peaks.get(name, 0.0), peak)


def _initializer_peaks(proto: onnx.ModelProto) -> dict[str, float]:
    """The largest finite |value| of every float32 initializer of the main graph."""
    from onnx import numpy_helper

    peaks: dict[str, float] = {}
    for tensor in proto.graph.initializer:
        if tensor.data_type == _FLOAT:
            _track(peaks, tensor.name, numpy_helper.to_array(tensor))
    return peaks


def _nodes_to_block(
    graph: onnx.GraphProto, peaks: Mapping[str, float]
) -> tuple[dict[str, str], dict[str, float]]:
    """Nodes to keep in float32 (name -> why) and the tensors out of float16's range (name ->
    largest |value|): the producers and the readers of every such tensor."""
    out_of_range = {
        name: peak
        for name, peak in peaks.items()
        if peak > FP16_MAX or 0.0 < peak < FP16_SMALLEST_NORMAL
    }
    blocked: dict[str, str] = {}
    for node in graph.node:
        for out in node.output:
            if out in out_of_range:
                blocked.setdefault(node.name, f"{out!r} reaches {_range_text(out_of_range[out])}")
        for inp in node.input:
            if inp in out_of_range:
                blocked.setdefault(node.name, f"reads {inp!r} at {_range_text(out_of_range[inp])}")
    return blocked, out_of_range


def _range_text(peak: float) -> str:
    return f"|x| = {peak:.3g}" if peak > FP16_MAX else f"|x| <= {peak:.3g}"


def _named_copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose unnamed main-graph nodes get unique names (``<op>_<index>``), so they can
    be probed and block-listed."""
    named = copy_model(proto)
    taken = {n.name for n in named.graph.node if n.name}
    for i, node in enumerate(named.graph.node):
        if not node.name:
            candidate = f"{node.op_type}_{i}"
            while candidate in taken:
                candidate += "_"
            node.name = candidate
            taken.add(candidate)
    return named


def _has_float32(proto: onnx.ModelProto) -> bool:
    for graph in iter_graphs(proto):
        if any(t.data_type == _FLOAT for t in graph.initializer):
            return True
        infos = (*graph.input, *graph.output, *graph.value_info)
        if any(v.type.tensor_type.elem_type == _FLOAT for v in infos):
            return True
    return False


def _cast_to(node: onnx.NodeProto) -> int | None:
    return next((int(a.i) for a in node.attribute if a.name == "to"), None)


def _skip_round_trips(graph: onnx.GraphProto, original: set[str]) -> None:
    """Bypass the converter's Cast pairs float32 -> float16 -> float32 between two float32
    regions (a blocked node or graph input feeding a blocked node or graph output), so values
    out of float16's range pass through in float32. The second Cast becomes an Identity; the
    first goes when nothing else reads it."""
    inserted = {n.name for n in graph.node if n.op_type == "Cast" and n.name not in original}
    producer = {out: n for n in graph.node for out in n.output}
    for node in graph.node:
        if node.name not in inserted or _cast_to(node) != _FLOAT:
            continue
        parent = producer.get(node.input[0])
        if parent is not None and parent.name in inserted and _cast_to(parent) == _FLOAT16:
            node.input[0] = parent.input[0]
            node.op_type = "Identity"
            del node.attribute[:]
    used = _read_names(graph) | {o.name for o in graph.output}
    dead = [
        n
        for n in graph.node
        if n.name in inserted and n.op_type == "Cast" and n.output[0] not in used
    ]
    gone = {n.output[0] for n in dead}
    for node in dead:
        graph.node.remove(node)
    kept = [v for v in graph.value_info if v.name not in gone]
    del graph.value_info[:]
    graph.value_info.extend(kept)


def _read_names(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name a node of ``graph`` or of its subgraphs reads."""
    return {name for g in walk_graphs(graph) for node in g.node for name in node.input}


def _toposort(pass_name: str, graph: onnx.GraphProto) -> None:
    """Sort the nodes (the converter appends its Casts at the end) with onnxruntime's own
    topological sort."""
    from onnxruntime.transformers.onnx_model import OnnxModel

    try:
        OnnxModel.graph_topological_sort(graph)
    except RuntimeError as e:
        raise PassError(
            f"{pass_name}: the converted graph cannot be sorted: {e}",
            hint="leave fp16 out of the recipe for this model",
        ) from e
