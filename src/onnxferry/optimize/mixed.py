"""Mixed precision as a search: which MatMul/Gemm/Conv nodes (for static int8, every quantized
node) run in int8 and which stay fp32, chosen by measured int8 error and measured fp32 time.

    costs = node_costs(model, feeds[0])                        # {"fc1": 0.21, ...} ms per run
    layers = layer_scores(model, feeds, costs, per_channel=True)   # error and cost per node
    down = restore_order(layers)     # all-int8 first: restore the worst (highest error) first
    up = quantize_order(layers)      # fp32 first: quantize the cheapest (least error per ms)
    recipe = with_float_nodes(Recipe.of(["int8_dynamic"]), down[:1])   # decisions, as data

The search (``auto``) walks both orders, bisecting how far to go against the budget on the
tuning data; each step is an ordinary recipe whose int8 pass names its fp32 nodes
(``nodes_to_exclude``), so the chosen model is rebuilt exactly from its saved recipe.
Per-node time is ONNX Runtime's own profile of the fp32 model at the timing batch (graph
optimizations off, so every node keeps its name); error is ``sensitivity``'s isolated int8
error.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..model import Model
from ..runtime import run_session
from .recipe import Recipe

INT8_PASSES = ("int8_dynamic", "int8_static", "weight_only")
"""Passes whose per-node decisions the mixed search makes (their ``nodes_to_exclude``)."""


@dataclass(frozen=True)
class LayerScore:
    """One quantizable node: its int8 error, fp32 time and size."""

    node: str
    op_type: str
    error: float
    cost_ms: float | None
    weights: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def node_costs(
    model: Model, feeds: Mapping[str, np.ndarray], threads: int | None = None, runs: int = 20
) -> dict[str, float]:
    """Median fp32 time (ms) per run of each node, from ONNX Runtime's profiler on ``feeds``
    (the first run, which allocates, is left out; the median shrugs off a loaded machine)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="onnxferry-profile-") as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "profile")
        opts.log_severity_level = 3
        if threads is not None:
            opts.intra_op_num_threads = threads
        source = (
            str(model.path)
            if model.path is not None and model.path.is_file()
            else model.proto.SerializeToString()
        )
        session = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
        for _ in range(runs + 1):
            run_session(session, None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    seen: dict[str, list[float]] = {}
    for event in events:
        name = str(event.get("name", ""))
        if event.get("cat") == "Node" and name.endswith("_kernel_time"):
            seen.setdefault(name[: -len("_kernel_time")], []).append(float(event["dur"]) / 1e3)
    return {node: float(np.median(ms[1:] or ms)) for node, ms in seen.items()}


def layer_scores(
    model: Model,
    feeds: Sequence[Mapping[str, np.ndarray]],
    costs: Mapping[str, float],
    *,
    per_channel: bool = False,
    reduce_range: bool = False,
) -> list[LayerScore]:
    """Each MatMul/Gemm with a constant weight: its isolated dynamic-int8 error on ``feeds``
    (``rank_dynamic_sensitivity``) and its measured fp32 time (``costs``). Gathers are left
    out: an embedding table in int8 saves size, not time."""
    from .sensitivity import rank_dynamic_sensitivity

    ranking = rank_dynamic_sensitivity(
        model, feeds, per_channel=per_channel, reduce_range=reduce_range, by="error"
    )
    return [
        LayerScore(r.node, r.op_type, r.error, costs.get(r.node), r.weights)
        for r in ranking
        if r.op_type in ("MatMul", "Gemm")
    ]


def static_layer_scores(
    source: Model,
    quantized: Model,
    feeds: Sequence[Mapping[str, np.ndarray]],
    costs: Mapping[str, float],
) -> list[LayerScore]:
    """Each node static QDQ int8 quantized (Conv, MatMul, Gemm, and the Add, Mul, Softmax ...
    whose activations it quantizes too): its isolated error (``rank_sensitivity`` of
    ``quantized`` against its pre-processed ``source``) and fp32 time."""
    from .sensitivity import rank_sensitivity

    ranking = rank_sensitivity(source, quantized, feeds)
    return [LayerScore(r.node, r.op_type, r.error, costs.get(r.node), r.weights) for r in ranking]


def _cost(layer: LayerScore, total_weights: int, total_ms: float) -> float:
    """Measured fp32 ms, else the node's share of the measured total by weight count."""
    if layer.cost_ms is not None and layer.cost_ms > 0:
        return layer.cost_ms
    return max(total_ms, 1e-6) * layer.weights / max(total_weights, 1)


def restore_order(layers: Sequence[LayerScore]) -> list[str]:
    """All-int8 first, restore the worst: nodes by int8 error, highest first."""
    return [layer.node for layer in sorted(layers, key=lambda s: s.error, reverse=True)]


def quantize_order(layers: Sequence[LayerScore]) -> list[str]:
    """fp32 first, quantize the cheapest: nodes by int8 error per fp32 millisecond saved,
    lowest first (the most time won for the least accuracy)."""
    total_w = sum(s.weights for s in layers)
    total_ms = sum(s.cost_ms or 0.0 for s in layers)
    return [
        layer.node for layer in sorted(layers, key=lambda s: s.error / _cost(s, total_w, total_ms))
    ]


def with_float_nodes(recipe: Recipe, nodes: Sequence[str]) -> Recipe:
    """``recipe`` with its int8 pass keeping ``nodes`` in fp32 (explicit, reproducible), and
    no ``exclude_sensitive`` ranking of its own."""
    passes = []
    for p in recipe.passes:
        if p.name in INT8_PASSES:
            changes: dict[str, Any] = {"nodes_to_exclude": tuple(nodes)}
            if hasattr(p, "exclude_sensitive"):
                changes["exclude_sensitive"] = 0
            p = replace(p, **changes)
        passes.append(p)
    return Recipe(passes)


def float_nodes(recipe: Recipe) -> list[str]:
    """The nodes ``recipe``'s int8 pass keeps in fp32 (its ``nodes_to_exclude``)."""
    for p in recipe.passes:
        if p.name in INT8_PASSES:
            return list(getattr(p, "nodes_to_exclude", ()))
    return []


def int8_pass(recipe: Recipe) -> str | None:
    """The name of ``recipe``'s int8 pass, if it has one."""
    return next((p.name for p in recipe.passes if p.name in INT8_PASSES), None)
