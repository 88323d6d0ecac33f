"""What ``auto_search`` reports: each candidate's outcome and the search's result.

    candidate = search.candidates[i]
    candidate.within, candidate.rounds_ms, candidate.pair_speedup, candidate.load()
    search.tables(); search.figures(); search.to_dict()      # the SearchResult (a ReportBody)
    short_label(candidate)                                   # its label, fp32 nodes counted

A candidate's model stays on disk (``Candidate.path``), so a search holds one in memory at a
time however many it tries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..model import Model
from ..report import Table
from .chain import ChainResult
from .recipe import Recipe


@dataclass
class Candidate:
    """One recipe's outcome in the search. Its model stays on disk (``path``) so the search
    holds one candidate in memory at a time, however many it tries."""

    recipe: Recipe
    result: ChainResult
    path: Path | None = None
    rounds_ms: list[float] = field(default_factory=list)
    """p50 of each side-by-side round with the original and the other finalists."""
    held_out_metric: float | None = None
    """The metric on the held-out judging data (None when there is none, or not judged)."""
    refused: bool = False
    """Within budget on the tuning data only: missed on the held-out data."""
    one_liner: bool = False
    origin: str = ""
    """Where the recipe came from: "" (the plan), "restore worst k", "quantize cheapest k",
    "prune r", "prune r, then int8"."""
    started_s: float = 0.0
    """When it started, in seconds since the search began."""
    pair_speedup: float | None = None
    """The original's p50 over this one's, median of the interleaved paired rounds."""

    @property
    def within(self) -> bool:
        return bool(self.result.kept) and self.result.within_budget and not self.refused

    def load(self) -> Model | None:
        return Model.load(self.path) if self.path is not None else None


@dataclass
class SearchResult:
    """Every candidate, the choice and why (ReportBody)."""

    model: str
    budget: str
    baseline_ms: float
    candidates: list[Candidate] = field(default_factory=list)
    chosen: int | None = None
    reason: str = ""
    misses_by: float | None = None  # set when no candidate meets the budget
    baseline_rounds_ms: list[float] = field(default_factory=list)
    untried: list[str] = field(default_factory=list)
    """Recipes not tried because the search's time budget ran out."""
    cpu: str = ""
    skipped_formats: dict[str, str] = field(default_factory=dict)
    """Formats left out on this machine, and why."""
    layers: list[dict[str, Any]] = field(default_factory=list)
    """Per quantizable node of the chosen recipe: decision, measured error and fp32 ms."""
    layers_of: str = ""
    """The candidate ``layers`` describes (the chosen one, else the best int8 one)."""
    warnings: list[str] = field(default_factory=list)
    """Library warnings captured while searching (distinct lines, with counts)."""
    held_out: str = ""
    """How the data was split between tuning and judging."""
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        """The returned model meets the budget (the original, when nothing was faster)."""
        return self.misses_by is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "budget": self.budget,
            "baseline_ms": self.baseline_ms,
            "chosen": (
                self.candidates[self.chosen].recipe.to_data() if self.chosen is not None else None
            ),
            "reason": self.reason,
            "misses_by": self.misses_by,
            "untried": list(self.untried),
            "cpu": self.cpu,
            "skipped_formats": dict(self.skipped_formats),
            "held_out": self.held_out,
            "elapsed_s": self.elapsed_s,
            "layers": list(self.layers),
            "layers_of": self.layers_of,
            "warnings": list(self.warnings),
            "candidates": [
                {
                    "recipe": c.recipe.label(),
                    "one_liner": c.one_liner,
                    "started_s": c.started_s,
                    "pair_speedup": c.pair_speedup,
                    "origin": c.origin,
                    "kept": c.result.kept,
                    "latency_ms": c.result.final_ms,
                    "speedup": c.result.speedup,
                    "metric": c.result.final_metric,
                    "held_out_metric": c.held_out_metric,
                    "refused": c.refused,
                    "size_bytes": c.result.final_size,
                    "within_budget": c.within,
                    "steps": [s.to_dict() for s in c.result.steps],
                }
                for c in self.candidates
            ],
        }

    def tables(self) -> list[Table]:
        rows = [
            (
                f"{'*' if i == self.chosen else ' '} {i + 1}. {short_label(c)}",
                _kept_text(c),
                c.result.final_ms,
                c.result.speedup,
                c.result.final_metric,
                c.held_out_metric,
                (c.result.final_size or 0) / 2**20,
                "refused" if c.refused else c.within,
            )
            for i, c in enumerate(self.candidates)
        ]
        columns = ("candidate", "kept", "p50 ms", "speedup", "metric", "held-out", "MiB", "within")
        title = (
            f"optimize --auto {self.model} (budget {self.budget}, "
            f"original p50 {self.baseline_ms:.3f} ms)"
        )
        tables = [Table(title, columns, rows)]
        if self.layers:
            layer_rows = [
                (d["node"], d["op_type"], d["decision"], d["error"], d["cost_ms"])
                for d in self.layers
            ]
            tables.append(
                Table(
                    f"per-layer decisions of {self.layers_of} (int8 error: normalized MSE; "
                    "cost: fp32 ms per run)",
                    ("node", "op", "decision", "int8 error", "fp32 ms"),
                    layer_rows,
                )
            )
        chosen = self.candidates[self.chosen] if self.chosen is not None else None
        pruned = _pruned_layers(chosen) if chosen is not None else []
        if pruned and chosen is not None:
            title = f"channels pruned by {short_label(chosen)}"
            tables.append(Table(title, ("node", "op", "channels", "removed"), pruned))
        machine = [(self.cpu or "-", "")]
        machine += [(f"skipped {name}", why) for name, why in self.skipped_formats.items()]
        tables.append(Table("machine and formats", ("what", "why"), machine))
        notes = [(self.reason,)]
        if self.held_out:
            notes.append((self.held_out,))
        if self.warnings:
            notes.append((f"{len(self.warnings)} distinct library warning(s) captured",))
        tables.append(Table("choice", ("why",), notes))
        return tables

    def figures(self) -> list[str]:
        """The candidates plot (latency against the budget metric), numbered as in the table
        (candidates without a latency or a metric have no point), and the per-layer int8
        error bars when layers were decided."""
        from ..plots import Point, bars_svg, candidates_svg
        from .budget import Budget

        points = [
            Point(short_label(c), c.result.final_ms, c.result.final_metric, c.within, i + 1)
            for i, c in enumerate(self.candidates)
            if c.result.final_ms is not None
            and c.result.final_metric is not None
            and math.isfinite(c.result.final_ms)
            and math.isfinite(c.result.final_metric)
        ]
        figures: list[str] = []
        if points:
            budget = Budget.parse(self.budget)
            figures.append(
                candidates_svg(
                    points,
                    metric=budget.metric,
                    limit=budget.limit,
                    higher_is_better=budget.higher_is_better,
                    baseline_ms=self.baseline_ms,
                )
            )
        bars = [
            (f"{d['node']} ({d['decision']})", float(d["error"]))
            for d in self.layers[:40]
            if d["error"] is not None and math.isfinite(d["error"])
        ]
        if bars:
            figures.append(bars_svg(bars, "int8 error (normalized MSE)", "per-layer decisions"))
        return figures


def _pruned_layers(c: Candidate) -> list[tuple[str, str, str, int]]:
    """Per layer a kept prune_channels step of ``c`` pruned: its op, channels before -> after,
    how many went."""
    rows = []
    for step in c.result.steps:
        if step.status == "kept" and step.label.startswith("prune_channels"):
            for node, layer in step.details.get("pruned", {}).items():
                before, after = layer["channels_before"], layer["channels_after"]
                rows.append((node, layer["op"], f"{before} -> {after}", before - after))
    return rows


def short_label(c: Candidate, width: int = 60) -> str:
    """A candidate's label, its fp32 node list cut short (the recipe has them all)."""
    from .mixed import float_nodes

    label = c.recipe.label()
    nodes = float_nodes(c.recipe)
    if nodes and len(label) > width:
        label = label.split("nodes_to_exclude")[0] + f"{len(nodes)} nodes in fp32)"
    return f"{label} [{c.origin}]" if c.origin else label


def _kept_text(c: Candidate) -> str:
    """The passes a candidate kept, its fp32 node list counted rather than listed."""
    from .mixed import float_nodes

    if not c.result.kept:
        return "(nothing kept)"
    nodes = float_nodes(c.recipe)
    shown = [k.split("nodes_to_exclude")[0] + f"{len(nodes)} in fp32)" if nodes and
             "nodes_to_exclude" in k else k for k in c.result.kept]  # fmt: skip
    return " -> ".join(shown)
