"""Two registered versions run side by side: parity on the same inputs, and batch-1 latency
measured interleaved. The promotion gates and ``diff`` both judge versions with these.

    from onnxferry.registry.access import opened
    with opened(reg, reg.get("resnet:1")) as a, opened(reg, reg.get("resnet:2")) as b:
        feeds, source = comparison_inputs(a, b)    # resnet:1's golden inputs
        compare_versions(a, b, feeds, Tolerance()).ok
        latency = measure_pair(a, b, feeds[0], rounds=3)
    latency.ratio, latency.noise                   # median of per-round ratios B / A, spread

``measure_pair`` runs ``rounds`` rounds in alternating order (ABBA), each model timed for about
``ROUND_S`` by ``measure``'s loop on fresh sessions; ``LatencyComparison.ratio`` is the median
of the per-round ratios candidate / reference, its ``noise`` half their interquartile spread.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..model import Model
from ..parity import Parity, Tolerance, compare_outputs
from ..report import Table
from .access import Opened

Feeds = dict[str, np.ndarray]

ROUNDS = 7
"""Interleaved rounds of the latency measurement (odd: the median is one round's)."""
ROUND_S = 0.05
"""About how long each model runs per round (seconds); at least MIN_ITERATIONS runs."""
MIN_ITERATIONS = 3
MAX_ITERATIONS = 2000


@dataclass(frozen=True)
class LatencyComparison:
    """Batch-1 latency of a reference and a candidate, measured interleaved: the median
    latency (ms) of each in every round, and the per-round ratios candidate / reference."""

    reference: str
    candidate: str
    shapes: dict[str, tuple[int, ...]]
    iterations: int
    reference_ms: tuple[float, ...]
    candidate_ms: tuple[float, ...]

    @property
    def ratios(self) -> list[float]:
        pairs = zip(self.reference_ms, self.candidate_ms, strict=True)
        return [c / r if r > 0 else math.inf for r, c in pairs]

    @property
    def ratio(self) -> float:
        """Median of the per-round ratios: above 1, the candidate is slower."""
        return float(np.median(self.ratios))

    @property
    def noise(self) -> float:
        """Half the interquartile spread of the per-round ratios, relative to their median:
        how far a ratio moves between rounds (0.05: about +-5%)."""
        q25, q75 = np.percentile(self.ratios, [25, 75])
        return float((q75 - q25) / 2 / self.ratio) if self.ratio > 0 else 0.0

    @property
    def reference_p50_ms(self) -> float:
        return float(np.median(self.reference_ms))

    @property
    def candidate_p50_ms(self) -> float:
        return float(np.median(self.candidate_ms))

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "candidate": self.candidate,
            "shapes": {k: list(v) for k, v in self.shapes.items()},
            "rounds": len(self.reference_ms),
            "iterations_per_round": self.iterations,
            "reference_p50_ms": self.reference_p50_ms,
            "candidate_p50_ms": self.candidate_p50_ms,
            "ratio": self.ratio,
            "noise": self.noise,
            "reference_round_p50_ms": list(self.reference_ms),
            "candidate_round_p50_ms": list(self.candidate_ms),
        }

    def table(self, title: str) -> Table:
        rows = [
            (self.reference, self.reference_p50_ms, min(self.reference_ms), max(self.reference_ms)),
            (self.candidate, self.candidate_p50_ms, min(self.candidate_ms), max(self.candidate_ms)),
        ]
        return Table(title, ("version", "p50 ms", "fastest round", "slowest round"), rows)


def comparison_inputs(first: Opened, second: Opened) -> tuple[list[Feeds], str]:
    """Input sets both versions run on: ``first``'s golden inputs, else ``second``'s, else one
    generated set at batch 1 for ``first``; with where they came from."""
    from ..data import load_feeds

    for version in (first, second):
        if version.golden is not None:
            sets = load_feeds(version.golden, version.model.signature)
            return sets, f"{version.record.ref}'s golden inputs"
    from ..bench import batch_feeds

    return [batch_feeds(first.model, 1)], "generated inputs"


def compare_versions(
    reference: Opened, candidate: Opened, feeds: Sequence[Feeds], tolerance: Tolerance
) -> Parity:
    """Both versions run on every input set, the candidate judged against the reference."""
    return compare_run(reference, candidate, run_versions(reference, candidate, feeds), tolerance)


def run_versions(
    reference: Opened, candidate: Opened, feeds: Sequence[Feeds]
) -> tuple[list[Feeds], list[Feeds]]:
    """The outputs of both versions on every input set (reference's, candidate's)."""
    from ..feeds import checked_feeds
    from ..runtime import OrtRunner

    outputs = []
    for version in (reference, candidate):
        sets = checked_feeds(feeds, version.model.signature, where=version.record.ref)
        runner = OrtRunner(version.model)
        outputs.append([runner.run(f) for f in sets])
    return outputs[0], outputs[1]


def compare_run(
    reference: Opened,
    candidate: Opened,
    outputs: tuple[list[Feeds], list[Feeds]],
    tolerance: Tolerance,
) -> Parity:
    """``run_versions``'s outputs compared: the candidate's against the reference's."""
    return compare_outputs(
        outputs[0],
        outputs[1],
        tolerance,
        reference_name=reference.record.ref,
        candidate_name=candidate.record.ref,
    )


def batch_one(model: Model, feeds: Mapping[str, np.ndarray]) -> Feeds:
    """``feeds`` cut to the first row along every batch axis of ``model`` that holds more
    (a model with fixed dims runs its inputs as they are)."""
    from ..feeds import unknown_dims

    out = {name: np.asarray(value) for name, value in feeds.items()}
    for dim in unknown_dims(model.signature):
        array = out.get(dim.input)
        if dim.kind != "batch" or array is None or array.ndim <= dim.axis:
            continue
        if array.shape[dim.axis] > 1:
            out[dim.input] = np.take(array, [0], axis=dim.axis)
    return out


def measure_pair(
    reference: Opened,
    candidate: Opened,
    feeds: Mapping[str, np.ndarray],
    *,
    rounds: int = ROUNDS,
    round_s: float = ROUND_S,
) -> LatencyComparison:
    """Batch-1 latency of two versions on the same feeds (``batch_one`` of the candidate):
    fresh sessions, a few calibration runs to size the rounds, then ``rounds`` rounds in
    alternating order (ABBA), each model timed by ``measure``'s loop for about ``round_s``."""
    one = batch_one(candidate.model, feeds)
    timers = [_Timer(version, one) for version in (reference, candidate)]
    first_ms = [timer(MIN_ITERATIONS) for timer in timers]
    slowest_s = max(first_ms) / 1e3
    iterations = int(min(MAX_ITERATIONS, max(MIN_ITERATIONS, round_s / max(slowest_s, 1e-7))))
    per: tuple[list[float], list[float]] = ([], [])
    for r in range(rounds):
        for side in (0, 1) if r % 2 == 0 else (1, 0):
            per[side].append(timers[side](iterations))
    return LatencyComparison(
        reference.record.ref,
        candidate.record.ref,
        {k: tuple(int(d) for d in v.shape) for k, v in one.items()},
        iterations,
        tuple(per[0]),
        tuple(per[1]),
    )


class _Timer:
    """One version's session on fixed feeds: ``timer(n)`` is the median ms of ``n`` runs."""

    def __init__(self, version: Opened, feeds: Feeds) -> None:
        from ..feeds import checked_feeds
        from ..runtime import create_session, needs_ortvalue_outputs, ort_inputs

        model = version.model
        where = f"{version.record.ref} at batch 1"
        (self.arrays,) = checked_feeds(feeds, model.signature, where=where)
        self.name = model.name
        self.session = create_session(model)
        self.ortvalues = needs_ortvalue_outputs(model.signature)
        self.inputs = ort_inputs(self.arrays, all_ortvalues=self.ortvalues)

    def __call__(self, count: int) -> float:
        from ..measure import Timing, measure_stats
        from ..runtime import run_errors

        with run_errors(self.name, self.arrays):
            timing = Timing(warmup=1, iterations=count)
            return measure_stats(self.session, self.inputs, timing, ortvalues=self.ortvalues).p50_ms
