"""Parity: how far apart two runners' outputs are, judged against tolerances.

    parity = compare_runners(ref_runner, cand_runner, feeds)   # any two Runners, feed sets
    parity = compare_outputs(ref_outputs, cand_outputs, Tolerance(atol=1e-4))  # [{name: arr}]
    parity.ok, parity.summary()                # one line: how far off, and where
    parity.worst                               # the failing output needing the largest atol
    [(o.name, o.max_abs, o.required_atol) for o in parity.outputs]   # what would have passed
    print(onnxferry.Report("compare", parity).to_text())       # a ReportBody: tables, to_dict

``onnxferry.compare`` (compare.py) builds the runners and feeds for two models, a model on two
providers, or a model and its source, and adds the first diverging tensor (``bisect``).

Checks run in order: output names, then shapes (and dtype kinds), then values. Per element a
float value passes when |cand - ref| <= atol + rtol * |ref| (numpy.isclose); NaN on both sides
at the same place counts as equal, +-Inf must match exactly, and a NaN or Inf on one side only
is a counted mismatch. Integer, bool and string outputs must match exactly. Every output keeps
its statistics and the atol (at the given rtol) and rtol (at the given atol) it would have
needed to pass. ``bisect`` exposes the intermediate tensors two models share and names the
first one, in the reference's topological order, that fails the tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .errors import FeedError, UsageError
from .report import Table
from .runtime import Runner
from .signature import dtype_from_numpy

if TYPE_CHECKING:
    pass

_TINY = float(np.finfo(np.float64).tiny)


@dataclass(frozen=True)
class Tolerance:
    """Absolute and relative tolerance, with per-output overrides ``{name: (atol, rtol)}``."""

    atol: float = 1e-4
    rtol: float = 1e-3
    per_output: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        pairs = [("default", (self.atol, self.rtol)), *self.per_output.items()]
        for name, (atol, rtol) in pairs:
            if not (atol >= 0 and rtol >= 0 and math.isfinite(atol) and math.isfinite(rtol)):
                raise UsageError(
                    f"tolerance for {name} must be finite and non-negative, "
                    f"got atol={atol}, rtol={rtol}"
                )

    @classmethod
    def partial(cls, atol: float | None = None, rtol: float | None = None) -> Tolerance | None:
        """The one place a partial tolerance meets the defaults: the values given, these
        defaults for the rest; None when neither is given (the verb's own default applies,
        e.g. a source framework's).

            Tolerance.partial(atol=1e-2)     # Tolerance(atol=0.01, rtol=0.001)
            Tolerance.partial()              # None
        """
        if atol is None and rtol is None:
            return None
        default = cls()
        return cls(
            atol=default.atol if atol is None else atol,
            rtol=default.rtol if rtol is None else rtol,
        )

    def for_output(self, name: str) -> tuple[float, float]:
        """(atol, rtol) for one output: its override, else the defaults."""
        atol, rtol = self.per_output.get(name, (self.atol, self.rtol))
        return float(atol), float(rtol)

    def to_dict(self) -> dict[str, Any]:
        return {
            "atol": self.atol,
            "rtol": self.rtol,
            "per_output": {
                name: {"atol": atol, "rtol": rtol}
                for name, (atol, rtol) in sorted(self.per_output.items())
            },
        }


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

    @property
    def ok(self) -> bool:
        return not self.problems and all(o.passed for o in self.outputs)

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


# --- judging --------------------------------------------------------------------------------


def compare_outputs(
    reference: Sequence[Mapping[str, np.ndarray]],
    candidate: Sequence[Mapping[str, np.ndarray]],
    tolerance: Tolerance = Tolerance(),
    *,
    reference_name: str = "reference",
    candidate_name: str = "candidate",
) -> Parity:
    """Judge per-sample output dicts ``{name: array}``; statistics aggregate over samples.

    parity = compare_outputs([ref_runner.run(f)], [cand_runner.run(f)])
    """
    if len(reference) != len(candidate):
        raise UsageError(
            f"{reference_name} has {len(reference)} samples but {candidate_name} has "
            f"{len(candidate)}",
            hint="give both sides the outputs for the same feeds",
        )
    if not reference:
        raise UsageError("no samples to compare", hint="give at least one set of outputs")
    parity = Parity(reference_name, candidate_name, len(reference), tolerance)
    ref_names, cand_names = list(reference[0]), list(candidate[0])
    for name in ref_names:
        if name not in cand_names:
            parity.problems.append(
                f"output {name!r} of {reference_name} is missing from {candidate_name}"
            )
    for name in cand_names:
        if name not in ref_names:
            parity.problems.append(
                f"{candidate_name} has an extra output {name!r} that {reference_name} lacks"
            )
    for name in (n for n in ref_names if n in cand_names):
        atol, rtol = tolerance.for_output(name)
        lacking = [
            i
            for i, (r, c) in enumerate(zip(reference, candidate, strict=True))
            if name not in r or name not in c
        ]
        if lacking:
            result = _new_result(
                name, _array(reference[0][name]), _array(candidate[0][name]), atol, rtol
            )
            result.problem = f"missing from sample {lacking[0]}"
            parity.outputs.append(result)
            continue
        refs = [_array(r[name]) for r in reference]
        cands = [_array(c[name]) for c in candidate]
        parity.outputs.append(judge_output(name, refs, cands, atol, rtol))
    return parity


def compare_runners(
    reference: Runner,
    candidate: Runner,
    feeds: Sequence[Mapping[str, np.ndarray]],
    tolerance: Tolerance = Tolerance(),
) -> Parity:
    """Run both runners on every feed set and judge the outputs.

    parity = compare_runners(OrtRunner(a), OrtRunner(b), [plan_feeds(a).feeds(seed=0)])
    """
    refs = [reference.run(f) for f in feeds]
    cands = [candidate.run(f) for f in feeds]
    return compare_outputs(
        refs, cands, tolerance, reference_name=reference.name, candidate_name=candidate.name
    )


def judge_output(
    name: str, refs: Sequence[np.ndarray], cands: Sequence[np.ndarray], atol: float, rtol: float
) -> OutputParity:
    """Compare one tensor over samples: shapes, then dtype kinds, then values.

    A sequence of maps (scikit-learn's ZipMap probabilities) is judged as the table of its
    values, one row per map and one column per key, once both sides have the same keys."""
    keys = {_map_keys(a) for a in (*refs, *cands)}
    if len(keys) > 1 and None not in keys:
        result = _new_result(name, refs[0], cands[0], atol, rtol)
        shown = sorted(str(sorted(k, key=str)) for k in keys if k is not None)
        result.problem = f"map keys differ: {' vs '.join(shown)}"
        return result
    if len(keys) == 1 and None not in keys:
        refs, cands = [_map_table(r) for r in refs], [_map_table(c) for c in cands]
    result = _new_result(name, refs[0], cands[0], atol, rtol)
    for i, (r, c) in enumerate(zip(refs, cands, strict=True)):
        if r.shape != c.shape:
            result.ref_shape, result.cand_shape = tuple(r.shape), tuple(c.shape)
            where = f" in sample {i}" if len(refs) > 1 else ""
            result.problem = (
                f"shape differs{where}: reference {list(r.shape)}, candidate {list(c.shape)}"
            )
            return result
    ref_kind, cand_kind = _kind(refs[0].dtype), _kind(cands[0].dtype)
    if ref_kind != cand_kind or ref_kind == "other":
        result.problem = (
            f"dtype differs: reference {refs[0].dtype} ({ref_kind}), "
            f"candidate {cands[0].dtype} ({cand_kind})"
        )
        return result
    if result.kind == "exact":
        _judge_exact(result, refs, cands, text=ref_kind == "string")
    else:
        _judge_float(result, refs, cands)
    return result


def _new_result(
    name: str, ref: np.ndarray, cand: np.ndarray, atol: float, rtol: float
) -> OutputParity:
    return OutputParity(
        name=name,
        kind="float" if _kind(ref.dtype) == "float" else "exact",
        ref_dtype=str(ref.dtype),
        cand_dtype=str(cand.dtype),
        ref_shape=tuple(ref.shape),
        cand_shape=tuple(cand.shape),
        atol=atol,
        rtol=rtol,
    )


def _array(value: Any) -> np.ndarray:
    return value if isinstance(value, np.ndarray) else np.asarray(value)


def _kind(dtype: np.dtype[Any]) -> str:
    """ "float", "int", "bool", "string" or "other" (cannot be compared)."""
    if dtype.kind in "OUS":
        return "string"
    if dtype.kind == "b":
        return "bool"
    if dtype.kind in "iu":
        return "int"
    if dtype.kind in "fc":
        return "float"
    try:
        return dtype_from_numpy(dtype).kind  # bfloat16 and float8 from ml_dtypes
    except FeedError:
        return "other"


def _judge_exact(
    result: OutputParity, refs: Sequence[np.ndarray], cands: Sequence[np.ndarray], *, text: bool
) -> None:
    equal = total = 0
    for r, c in zip(refs, cands, strict=True):
        if text:
            r, c = _as_text(r), _as_text(c)
        same = np.asarray(r == c, dtype=bool)
        equal += int(np.count_nonzero(same))
        total += int(same.size)
    result.exact_match = equal / total if total else 1.0
    result.passed = equal == total


def _map_keys(array: np.ndarray) -> frozenset[Any] | None:
    """The keys shared by every element of a 1-D array of maps with numeric values, else None."""
    if array.dtype != object or array.ndim != 1 or not array.size:
        return None
    items = array.tolist()
    if not all(isinstance(m, dict) for m in items):
        return None
    keys = frozenset(items[0])
    if any(frozenset(m) != keys for m in items):
        return None
    numeric = all(isinstance(v, (int, float, np.number)) for m in items for v in m.values())
    return keys if numeric else None


def _map_table(array: np.ndarray) -> np.ndarray:
    """Rows of map values, columns in key order (float64, so integer labels stay exact)."""
    items = array.tolist()
    order = sorted(items[0], key=str)
    return np.array([[m[k] for k in order] for m in items], dtype=np.float64)


def _as_text(array: np.ndarray) -> np.ndarray:
    items = [
        x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)
        for x in array.ravel().tolist()
    ]
    return np.array(items, dtype=object).reshape(array.shape)


def _judge_float(
    result: OutputParity, refs: Sequence[np.ndarray], cands: Sequence[np.ndarray]
) -> None:
    complex_ = any(a.dtype.kind == "c" for a in (*refs, *cands))
    work = np.complex128 if complex_ else np.float64
    r_parts = [np.asarray(r, dtype=work).ravel() for r in refs]
    c_parts = [np.asarray(c, dtype=work).ravel() for c in cands]
    r, c = np.concatenate(r_parts), np.concatenate(c_parts)
    with np.errstate(all="ignore"):
        nan_mismatch = np.isnan(r) != np.isnan(c)
        inf_mismatch = (np.isinf(r) | np.isinf(c)) & ~nan_mismatch & (r != c)
        finite = np.isfinite(r) & np.isfinite(c)
        diff = np.abs(c[finite] - r[finite])
        ref_abs = np.abs(r[finite])
        rel = diff / np.maximum(ref_abs, _TINY)
    result.nan_mismatches = int(np.count_nonzero(nan_mismatch))
    result.inf_mismatches = int(np.count_nonzero(inf_mismatch))
    if diff.size:
        with np.errstate(all="ignore"):  # errors at ref 0 make rel huge; sums may reach inf
            result.max_abs, result.mean_abs = float(diff.max()), float(diff.mean())
            result.p99_abs = float(np.percentile(diff, 99))
            result.max_rel, result.mean_rel = float(rel.max()), float(rel.mean())
            result.p99_rel = float(np.percentile(rel, 99))
    result.cosine = _cosine(r, c)
    per_sample = [v for v in map(_cosine, r_parts, c_parts) if v is not None]
    result.cosine_min = min(per_sample) if per_sample else None
    if not complex_:
        result.top1, result.top5 = _top_k(refs, cands)
    impossible = bool(result.nan_mismatches or result.inf_mismatches)
    result.required_atol = _required_atol(diff, ref_abs, result.rtol, impossible)
    result.required_rtol = _required_rtol(diff, ref_abs, result.atol, impossible)
    result.passed = not impossible and _within(diff, ref_abs, result.atol, result.rtol)


def _within(diff: np.ndarray, ref_abs: np.ndarray, atol: float, rtol: float) -> bool:
    """The pass rule on finite pairs: |cand - ref| <= atol + rtol * |ref| everywhere."""
    return bool(np.all(diff <= atol + rtol * ref_abs))


def _required_atol(diff: np.ndarray, ref_abs: np.ndarray, rtol: float, impossible: bool) -> float:
    """Smallest atol that passes at ``rtol`` (inf when no atol can)."""
    if impossible:
        return math.inf
    if not diff.size:
        return 0.0
    estimate = max(float(np.max(diff - rtol * ref_abs)), 0.0)
    return _tighten(estimate, lambda atol: _within(diff, ref_abs, atol, rtol))


def _required_rtol(diff: np.ndarray, ref_abs: np.ndarray, atol: float, impossible: bool) -> float:
    """Smallest rtol that passes at ``atol`` (inf when no rtol can, e.g. an error at ref 0)."""
    if impossible:
        return math.inf
    over = diff > atol
    if not np.any(over):
        return 0.0
    if np.any(ref_abs[over] == 0):
        return math.inf
    with np.errstate(all="ignore"):
        estimate = float(np.max((diff[over] - atol) / ref_abs[over]))
    if not math.isfinite(estimate):
        return math.inf
    return _tighten(estimate, lambda rtol: _within(diff, ref_abs, atol, rtol))


def _tighten(estimate: float, passes: Callable[[float], bool], steps: int = 64) -> float:
    """The smallest float near ``estimate`` for which ``passes`` holds (rounding-exact)."""
    value = estimate
    for _ in range(steps):
        if passes(value):
            break
        value = float(np.nextafter(value, math.inf))
    for _ in range(steps):
        lower = float(np.nextafter(value, 0.0))
        if value <= 0 or not passes(lower):
            break
        value = lower
    return value


def _cosine(r: np.ndarray, c: np.ndarray) -> float | None:
    """Cosine similarity over the positions finite on both sides (1.0 for two zero vectors)."""
    keep = np.isfinite(r) & np.isfinite(c)
    r, c = r[keep], c[keep]
    if not r.size:
        return None
    scale = max(float(np.max(np.abs(r))), float(np.max(np.abs(c))))
    if scale == 0:
        return 1.0
    r, c = r / scale, c / scale
    norms = float(np.linalg.norm(r)) * float(np.linalg.norm(c))
    if norms == 0:
        return 0.0
    return float(np.clip(np.real(np.vdot(r, c)) / norms, -1.0, 1.0))


def _top_k(
    refs: Sequence[np.ndarray], cands: Sequence[np.ndarray]
) -> tuple[float | None, float | None]:
    """Top-1 agreement and mean top-5 overlap over the rows of the last axis (score-like
    outputs: rank >= 2 and at least 2 classes; top-5 needs at least 5)."""
    rows = top1 = 0
    overlap = 0.0
    with_top5 = True
    for r, c in zip(refs, cands, strict=True):
        if r.ndim < 2 or r.shape[-1] < 2:
            return None, None
        with_top5 = with_top5 and r.shape[-1] >= 5
        r2 = np.asarray(r, dtype=np.float64).reshape(-1, r.shape[-1])
        c2 = np.asarray(c, dtype=np.float64).reshape(-1, c.shape[-1])
        if not r2.shape[0]:
            continue
        rows += r2.shape[0]
        top1 += int(np.count_nonzero(np.argmax(r2, axis=-1) == np.argmax(c2, axis=-1)))
        if with_top5:
            tr = np.argpartition(-r2, 4, axis=-1)[:, :5]
            tc = np.argpartition(-c2, 4, axis=-1)[:, :5]
            overlap += float((tr[:, :, None] == tc[:, None, :]).any(axis=-1).sum()) / 5
    if not rows:
        return None, None
    return top1 / rows, (overlap / rows if with_top5 else None)
