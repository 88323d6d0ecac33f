"""What an explanation found: attributions shaped like the inputs, and its report.

    explanation = onnxferry.explain("model.onnx", {"x": x}, method="kernelshap")
    explanation.attributions.shape == x.shape     # one attribution per input element
    explanation.ranking(0)[:2]                    # the features that matter most for input 0
    explanation.report.save("explain.json")       # a Report: JSON, text tables, HTML

``base_values`` is the method's reference value: E[f(background)] for SHAP (so attributions add
up to ``scores - base_values``), LIME's intercept, the score of the baseline for occlusion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..report import Report, Table

if TYPE_CHECKING:
    from .kinds import Layout
    from .table import TableCoder

SHAP_METHODS = ("kernelshap", "permutation")
LISTED = 10
"""Features listed per input in the tables and the JSON summary."""


@dataclass
class Explanation:
    """Attributions of one input tensor's rows to the target's value, by one method."""

    model: str
    input_name: str
    method: str
    layout: Layout
    inputs: np.ndarray
    """The explained rows, ``(N, *sample_shape)``."""
    attributions: np.ndarray
    """Shaped like ``inputs``: each element's share of its row's target value."""
    base_values: np.ndarray
    scores: np.ndarray
    """The target's value at each row."""
    targets: list[str]
    """What was explained for each row, e.g. "probs[2]"."""
    evaluations: int
    session_runs: int
    seconds: float
    notes: list[str] = field(default_factory=list)
    segments: np.ndarray | None = None
    """Images: the superpixel labels each row was explained over, ``(N, height, width)``."""
    requested: int = 0
    """Rows asked for; fewer were explained when the budget ran out (``complete`` is False)."""
    words: list[str] | None = None
    """Texts: the pieces (a word and what follows it) that the ids in ``inputs`` stand for;
    id 0 is "" (padding)."""
    table: TableCoder | None = None
    """A table model: its columns (the features, by name) and their categories."""

    ok = True

    @property
    def kind(self) -> str:
        return self.layout.kind

    @property
    def complete(self) -> bool:
        return len(self.inputs) >= self.requested

    @property
    def report(self) -> Report[Explanation]:
        """The explanation as a Report (verb "explain"): JSON, text tables, HTML."""
        return Report("explain", self, notes=list(self.notes))

    def heatmap(self, index: int) -> np.ndarray:
        """An image's or a volume's attributions summed over channels: ``(height, width)``,
        ``(depth, height, width)``."""
        values = self.attributions[index]
        if len(self.layout.spatial_axes) == values.ndim:  # a volume without channels
            return np.asarray(values)
        return np.asarray(values.sum(axis=-1 if self.layout.channels_last else 0))

    def ranking(self, index: int) -> list[int]:
        """Features of row ``index`` (flat element indices; images and volumes: flat indices
        of the heatmap), largest absolute attribution first."""
        spatial = self.kind in ("image", "volume")
        values = self.heatmap(index) if spatial else self.attributions[index]
        order = np.argsort(-np.abs(np.asarray(values).reshape(-1)), kind="stable")
        return [int(i) for i in order]

    def additivity_gap(self, index: int) -> float:
        """``score - base - sum(attributions)``: near 0 for SHAP (efficiency)."""
        total = float(np.sum(self.attributions[index]))
        return float(self.scores[index] - self.base_values[index] - total)

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for i in range(len(self.inputs)):
            row: dict[str, Any] = {
                "index": i,
                "target": self.targets[i],
                "score": float(self.scores[i]),
                "base_value": float(self.base_values[i]),
                "attribution_sum": float(np.sum(self.attributions[i])),
                "additivity_gap": self.additivity_gap(i),
                "top": self._top(i),
            }
            if self.kind in ("tabular", "tokens", "text"):  # images, signals: attributions.npz
                row["attributions"] = self.attributions[i].reshape(-1).tolist()
            if self.words is not None:
                row["words"] = [self.words[int(t)] for t in self.inputs[i].reshape(-1)]
            rows.append(row)
        return {
            "model": self.model,
            "input": self.input_name,
            "method": self.method,
            "kind": self.kind,
            "layout": self.layout.to_dict(),
            "evaluations": self.evaluations,
            "session_runs": self.session_runs,
            "seconds": self.seconds,
            "complete": self.complete,
            "inputs_explained": len(self.inputs),
            "inputs_requested": self.requested,
            "explanations": rows,
        }

    def tables(self) -> list[Table]:
        summary = Table(
            f"explain {self.model}: input {self.input_name!r} ({self.kind}), {self.method}",
            ("input", "target", "score", "base", "sum of attributions", "top features"),
            [
                (
                    i,
                    self.targets[i],
                    float(self.scores[i]),
                    float(self.base_values[i]),
                    float(np.sum(self.attributions[i])),
                    ", ".join(f"{self._name(t)}: {t['attribution']:.3g}" for t in self._top(i)[:5]),
                )
                for i in range(len(self.inputs))
            ],
        )
        cost = Table(
            "cost",
            ("evaluations", "session runs", "seconds", "inputs explained"),
            [(self.evaluations, self.session_runs, self.seconds, self._explained())],
        )
        return [summary, cost]

    def _explained(self) -> str:
        return f"{len(self.inputs)} of {self.requested}"

    def _top(self, index: int) -> list[dict[str, Any]]:
        """The largest attributions of a row: features, token positions, pixels (row, col),
        voxels (depth, row, col) or a signal's places."""
        top = []
        if self.kind in ("image", "volume"):
            heat = self.heatmap(index)
            for flat in self.ranking(index)[:LISTED]:
                at = np.unravel_index(flat, heat.shape)
                place = ",".join(str(int(i)) for i in at)
                top.append({"feature": f"({place})", "attribution": float(heat[at])})
            return top
        values = self.attributions[index].reshape(-1)
        inputs = self.inputs[index].reshape(-1)
        for flat in self.ranking(index)[:LISTED]:
            value = inputs[flat].item()
            if self.words is not None:
                if not value:
                    continue  # padding after a shorter text
                value = self.words[value]
            feature: int | str = self._position(flat) if self.kind == "signal" else flat
            if self.table is not None:
                feature, value = self.table.columns[flat], self.table.value(flat, value)
            top.append({"feature": feature, "attribution": float(values[flat]), "value": value})
        return top

    def _name(self, top: dict[str, Any]) -> str:
        """How the summary table names a top feature: a text's word, else its place."""
        if self.words is not None:
            return repr(str(top["value"]).strip())
        return str(top["feature"])

    def _position(self, flat: int) -> str:
        """A signal's element by its place along the axes longer than 1 ("37006", "12,400")."""
        shape = self.layout.sample_shape
        place = np.unravel_index(flat, shape)
        return ",".join(str(int(i)) for i, n in zip(place, shape, strict=True) if n > 1) or "0"
