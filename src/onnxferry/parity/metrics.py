"""Float statistics of one output: errors, cosine, top-k, and the tolerance it needed.

    result = OutputParity("y", "float", "float32", "float32", (3,), (3,), atol=1e-4, rtol=0.0)
    judge_float(result, [np.array([1.0, 2.0, 3.0])], [np.array([1.0, 2.0, 3.1])])
    result.passed, result.max_abs, result.required_atol     # False, ~0.1, the smallest atol

Per element a float value passes when |cand - ref| <= atol + rtol * |ref| (numpy.isclose);
NaN on both sides at the same place counts as equal, +-Inf must match exactly, and a NaN or
Inf on one side only is a counted mismatch. ``required_atol`` (at the given rtol) and
``required_rtol`` (at the given atol) are exact to the last float.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from .results import OutputParity

_TINY = float(np.finfo(np.float64).tiny)


def judge_float(
    result: OutputParity, refs: Sequence[np.ndarray], cands: Sequence[np.ndarray]
) -> None:
    """Fill ``result`` (a float output, same shapes) with its statistics and verdict."""
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
