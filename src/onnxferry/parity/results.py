"""What a comparison found: per-output statistics, the first divergence, the verdict.

    parity = onnxferry.compare_outputs(ref_outputs, cand_outputs)   # a Parity
    parity.ok, parity.worst, parity.max_abs, parity.summary()       # the verdict, one line
    [(o.name, o.max_abs, o.required_atol) for o in parity.outputs]  # an OutputParity each
    parity.to_dict(), parity.tables()                               # a ReportBody

``Parity`` is the body of the report of every judging verb (``compare``, ``test``, the
verification of ``convert`` and ``optimize``); ``Divergence`` is the first tensor that fails,
which ``bisect`` finds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from ..report import Table
from .tolerance import Tolerance


@dataclass
class OutputParity:
    """How one output compares; statistics that do not apply to its kind are None."""

    name: str
    kind: Literal["float", "exact"]
    ref_dtype: str
    cand_dtype: str
    ref_shape: tuple[int, ...]
    cand_shape: tuple[int, ...]
    atol: float
    rtol: float
    passed: bool = False
    problem: str | None = None
    max_abs: float | None = None
    mean_abs: float | None = None
    p99_abs: float | None = None
    max_rel: float | None = None
    mean_rel: float | None = None
    p99_rel: float | None = None
    cosine: float | None = None
    cosine_min: float | None = None
    top1: float | None = None
    top5: float | None = None
    exact_match: float | None = None
    nan_mismatches: int | None = None
    inf_mismatches: int | None = None
    required_atol: float | None = None
    required_rtol: float | None = None
    source_noise: float | None = None
    """When the values passed only as the runtimes' own numerical noise: the atol a runtime's
    second kernel set needs to match its first on this output, the largest such
    (``judge.excuse_source_noise``)."""
    noise_atol: float | None = None
    """Then: the atol the nearest pair of a reference run and a candidate run needs."""
    step: float | None = None
    """When the values passed only as one step of the output's own quantization apart: the
    step (``judge.excuse_output_steps``)."""
    tied: int | None = None
    """A label output that passed only because its differing rows are ties: how many rows
    differ where both sides' top two scores are within the scores' tolerance
    (``judge.excuse_tied_labels``)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "passed": self.passed,
            "problem": self.problem,
            "ref_dtype": self.ref_dtype,
            "cand_dtype": self.cand_dtype,
            "ref_shape": list(self.ref_shape),
            "cand_shape": list(self.cand_shape),
            "atol": self.atol,
            "rtol": self.rtol,
            "max_abs": self.max_abs,
            "mean_abs": self.mean_abs,
            "p99_abs": self.p99_abs,
            "max_rel": self.max_rel,
            "mean_rel": self.mean_rel,
            "p99_rel": self.p99_rel,
            "cosine": self.cosine,
            "cosine_min": self.cosine_min,
            "top1": self.top1,
            "top5": self.top5,
            "exact_match": self.exact_match,
            "nan_mismatches": self.nan_mismatches,
            "inf_mismatches": self.inf_mismatches,
            "required_atol": self.required_atol,
            "required_rtol": self.required_rtol,
            "source_noise": self.source_noise,
            "noise_atol": self.noise_atol,
            "step": self.step,
            "tied": self.tied,
        }


@dataclass
class Divergence:
    """The first tensor, in the reference's topological order, that fails the tolerance."""

    tensor: str
    node: str
    op_type: str
    position: int
    max_abs: float | None
    max_rel: float | None
    required_atol: float | None
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "tensor": self.tensor,
            "node": self.node,
            "op_type": self.op_type,
            "position": self.position,
            "max_abs": self.max_abs,
            "max_rel": self.max_rel,
            "required_atol": self.required_atol,
            "problem": self.problem,
        }


@dataclass
class Parity:
    """The comparison of a candidate with a reference on the same feeds; a ReportBody."""

    reference: str
    candidate: str
    samples: int
    tolerance: Tolerance
    outputs: list[OutputParity] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    divergence: Divergence | None = None
    graphs: list[str] = field(default_factory=list, compare=False, repr=False)
    """Inline SVG for the HTML report: the graph with ``divergence.tensor`` marked."""
    notes: list[str] = field(default_factory=list)
    """How a verdict was reached beyond the tolerance (an output within the source's noise)."""

    @property
    def ok(self) -> bool:
        return not self.problems and all(o.passed for o in self.outputs)

    def figures(self) -> list[str]:
        """``graphs``, drawn under the tables of the HTML report (``report.Illustrated``)."""
        return list(self.graphs)

    @property
    def worst(self) -> OutputParity | None:
        """The failing output that needs the largest atol (problems and exact ones first)."""
        failing = [o for o in self.outputs if not o.passed]
        if not failing:
            return None
        return max(failing, key=lambda o: math.inf if o.required_atol is None else o.required_atol)

    @property
    def max_abs(self) -> float:
        """Largest absolute error over all outputs (0 when none was measured)."""
        return max((o.max_abs or 0.0 for o in self.outputs), default=0.0)

    @property
    def max_rel(self) -> float:
        """Largest relative error over all outputs (0 when none was measured)."""
        return max((o.max_rel or 0.0 for o in self.outputs), default=0.0)

    def summary(self) -> str:
        """One line: does it match, and if not, which output is worst and by how much."""
        pair = f"{self.candidate} vs {self.reference}"
        worst = self.worst
        if self.ok:
            abs_err, rel_err = self.max_abs, self.max_rel
            text = (
                f"{pair}: all {len(self.outputs)} outputs match over {self.samples} samples "
                f"(max abs {_fmt(abs_err)}, max rel {_fmt(rel_err)})"
            )
            text += "".join(
                f"; {o.name!r} within the runtimes' own noise (atol {_fmt(o.noise_atol)} "
                f"between the nearest pair of kernel sets, {_fmt(o.source_noise)} between "
                "one runtime's own two)"
                for o in self.outputs
                if o.source_noise is not None
            )
            text += "".join(
                f"; {o.name!r} a step of its quantization apart (step {_fmt(o.step)})"
                for o in self.outputs
                if o.step is not None
            )
        else:
            parts = []
            if self.problems:
                more = len(self.problems) - 1
                parts.append(self.problems[0] + (f" (and {more} more)" if more else ""))
            if worst is not None:
                parts.append(f"worst output {worst.name!r}: {_describe(worst)}")
            text = f"{pair}: " + "; ".join(parts)
        if self.divergence is not None:
            d = self.divergence
            text += f"; first divergence at {d.tensor!r} ({d.op_type} node {d.node!r})"
        return text

    def to_dict(self) -> dict[str, Any]:
        worst = self.worst
        return {
            "reference": self.reference,
            "candidate": self.candidate,
            "samples": self.samples,
            "ok": self.ok,
            "summary": self.summary(),
            "tolerance": self.tolerance.to_dict(),
            "problems": list(self.problems),
            "worst": worst.name if worst else None,
            "outputs": [o.to_dict() for o in self.outputs],
            "divergence": self.divergence.to_dict() if self.divergence else None,
            "notes": list(self.notes),
        }

    def tables(self) -> list[Table]:
        rows = [
            [
                o.name,
                o.kind,
                _shape_text(o),
                o.max_abs,
                o.p99_abs,
                o.max_rel,
                o.cosine,
                o.top1,
                o.exact_match,
                o.required_atol,
                o.passed,
            ]
            for o in self.outputs
        ]
        title = (
            f"parity: {self.candidate} vs {self.reference} ({self.samples} samples, "
            f"atol {_fmt(self.tolerance.atol)}, rtol {_fmt(self.tolerance.rtol)})"
        )
        columns = ["name", "kind", "shape", "max_abs", "p99_abs", "max_rel", "cosine"]
        columns += ["top1", "exact", "required_atol", "passed"]
        tables = [Table(title, columns, rows)]
        problems = [["-", p] for p in self.problems]
        problems += [[o.name, o.problem] for o in self.outputs if o.problem]
        if problems:
            tables.append(Table("problems", ["output", "problem"], problems))
        if self.notes:
            tables.append(Table("notes", ["note"], [[n] for n in self.notes]))
        if self.divergence is not None:
            d = self.divergence
            columns = ["tensor", "node", "op_type", "position", "max_abs", "max_rel"]
            row = [d.tensor, d.node, d.op_type, d.position, d.max_abs, d.max_rel]
            tables.append(
                Table("first divergence", [*columns, "required_atol"], [[*row, d.required_atol]])
            )
        return tables


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}"


def _shape_text(o: OutputParity) -> str:
    ref = list(o.ref_shape)
    return str(ref) if o.ref_shape == o.cand_shape else f"{ref} vs {list(o.cand_shape)}"


def _describe(o: OutputParity) -> str:
    if o.problem:
        return o.problem
    if o.kind == "exact":
        return f"{o.exact_match or 0.0:.2%} of elements match exactly"
    parts = [
        f"max abs {_fmt(o.max_abs)} (atol {_fmt(o.atol)})",
        f"max rel {_fmt(o.max_rel)} (rtol {_fmt(o.rtol)})",
        f"needs atol {_fmt(o.required_atol)}",
    ]
    if o.nan_mismatches:
        parts.append(f"{o.nan_mismatches} NaN mismatches")
    if o.inf_mismatches:
        parts.append(f"{o.inf_mismatches} Inf mismatches")
    return ", ".join(parts)
