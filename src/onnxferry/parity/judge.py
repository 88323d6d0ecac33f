"""The judge: output names, then shapes and dtype kinds, then values, per output.

    parity = compare_runners(ref_runner, cand_runner, feeds)       # runs both on every feed set
    parity = compare_outputs(ref_outputs, cand_outputs, Tolerance(atol=1e-3))  # [{name: array}]
    result = judge_output("probs", [ref_outputs[0]["probs"]], [cand_outputs[0]["probs"]], 1e-4, 0)
    result.passed, result.max_abs, result.required_atol            # one OutputParity
    parity = compare_within_noise(ref_outputs, cand_outputs, second=unoptimized_ort(model, feeds))
    excuse_source_noise(parity, [spread], [second])  # what the line above does with its figures

Float outputs (and sequences of float tensors) are measured by ``metrics``; integer, bool and
string outputs must match exactly, but for a classifier's label on rows where its scores tie
(``excuse_tied_labels``); a sequence of maps (scikit-learn's ZipMap) is judged as the table
of its values.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import FeedError, UsageError, one_line
from ..qdq import quantizes_activations
from ..runtime import Runner, map_keys, map_table, unoptimized_runner
from ..signature import dtype_from_numpy
from .metrics import judge_float
from .results import OutputParity, Parity
from .tolerance import Tolerance

if TYPE_CHECKING:
    from ..model import Model


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
    excuse_tied_labels(parity, reference, candidate)
    if parity.outputs and not any(_values(r) for r in reference):
        parity.problems.append(
            "nothing was compared: every output is empty on every sample (inputs of 0 rows?)"
        )
    return parity


def _values(outputs: Mapping[str, Any]) -> int:
    """How many values a sample's outputs hold (a sequence or map output counts as some)."""
    return sum(np.size(v) if isinstance(v, np.ndarray) else 1 for v in outputs.values())


def excuse_tied_labels(
    parity: Parity,
    reference: Sequence[Mapping[str, np.ndarray]],
    candidate: Sequence[Mapping[str, np.ndarray]],
) -> None:
    """A classifier's label output ``[batch]`` that differs only on rows where its one
    score output ``[batch, classes]`` ties (the top two within that output's tolerance, on
    both sides) passes, with the rows counted in ``tied``: which of two equal scores an
    argmax picks is rounding, not a different model. A forest of 20 trees split 10 to 10
    answers 0.5 and 0.5, and float32 sums round either way."""
    scores = [o for o in parity.outputs if o.kind == "float" and o.passed]
    for label in parity.outputs:
        if label.kind != "exact" or label.passed or label.problem or len(scores) != 1:
            continue
        score = scores[0]
        tied = _tied_rows(label.name, score.name, score.atol, score.rtol, reference, candidate)
        if tied is not None:
            label.passed, label.tied = True, tied
            parity.notes.append(
                f"{label.name}: {tied} row{'s' * (tied != 1)} differ where {score.name} ties "
                f"(its top two within atol {score.atol:g} + rtol {score.rtol:g}): an argmax "
                "of equal scores, not counted against the candidate"
            )


def _tied_rows(
    label: str,
    score: str,
    atol: float,
    rtol: float,
    reference: Sequence[Mapping[str, np.ndarray]],
    candidate: Sequence[Mapping[str, np.ndarray]],
) -> int | None:
    """How many rows differ in ``label``, when every one of them ties in ``score`` on both
    sides; None when a row differs without a tie (or the shapes pair no label with scores:
    ``[N]`` with ``[N, K]``, or a multi-output ``[N, O]`` with ``[O, N, K]``)."""
    tied = 0
    for ref, cand in zip(reference, candidate, strict=True):
        sides = [
            _per_output(_array(side[label]), _score_table(side[score])) for side in (ref, cand)
        ]
        if sides[0] is None or sides[1] is None or len(sides[0]) != len(sides[1]):
            return None
        for (ref_label, ref_scores), (cand_label, cand_scores) in zip(*sides, strict=True):
            if ref_label.shape != cand_label.shape:
                return None
            differ = np.flatnonzero(_as_text(ref_label) != _as_text(cand_label))
            for table in (ref_scores, cand_scores):
                top = np.sort(table[differ], axis=1)[:, -2:].astype(np.float64)
                if not np.all(top[:, 1] - top[:, 0] <= atol + rtol * np.abs(top[:, 1])):
                    return None
            tied += int(differ.size)
    return tied


def _per_output(
    labels: np.ndarray, scores: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """(labels [N], scores [N, K]) for each output of a classifier, or None."""
    if labels.ndim == 1 and scores.ndim == 2 and scores.shape[0] == labels.shape[0]:
        pairs = [(labels, scores)]
    elif labels.ndim == 2 and scores.ndim == 3 and scores.shape[:2] == labels.shape[::-1]:
        pairs = [(labels[:, o], scores[o]) for o in range(labels.shape[1])]
    else:
        return None
    return pairs if all(s.shape[1] >= 2 for _, s in pairs) else None


def _score_table(value: Any) -> np.ndarray:
    """Scores as numbers: a tensor, scikit-learn's ZipMap maps as their table, a sequence of
    tensors (one per output) stacked."""
    array = _array(value)
    return map_table(array) if map_keys(array) is not None else _numbers(array)


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


SecondOpinion = Callable[[], tuple[Sequence[Mapping[str, np.ndarray]], str]]
"""One side's outputs on the same feeds from a second kernel set, and that set's name."""

NamedRuns = tuple[str, Sequence[Mapping[str, np.ndarray]]]
"""A run's name and its outputs, one dict per feed set."""


def compare_within_noise(
    reference: Sequence[Mapping[str, np.ndarray]],
    candidate: Sequence[Mapping[str, np.ndarray]],
    tolerance: Tolerance = Tolerance(),
    *,
    second: SecondOpinion | None,
    candidate_second: SecondOpinion | None = None,
    steps: Mapping[str, float] | None = None,
    reference_name: str = "reference",
    candidate_name: str = "candidate",
) -> Parity:
    """``compare_outputs``, and when outputs fail on their values only, each side's own noise
    measured by its second opinion (run then, not before: ``second`` for the reference,
    ``candidate_second`` for the candidate's runtime) and ``excuse_source_noise`` applied. A
    second opinion that cannot run is left out, with a note saying why. ``steps``: the
    outputs that take values on a quantization's grid (``qdq.output_steps``), judged by
    ``excuse_output_steps`` first."""
    parity = compare_outputs(
        reference,
        candidate,
        tolerance,
        reference_name=reference_name,
        candidate_name=candidate_name,
    )
    if steps and not parity.problems:
        excuse_output_steps(parity, steps)
    if parity.ok or parity.problems:
        return parity
    sides: list[list[NamedRuns]] = [[(reference_name, reference)], [(candidate_name, candidate)]]
    spreads: list[Parity] = []
    for runs, opinion in zip(sides, (second, candidate_second), strict=True):
        name, outputs = runs[0]
        if opinion is None:
            continue
        try:
            other, other_name = opinion()
        except Exception as e:  # a kernel set without one of the ops: no second opinion
            parity.notes.append(f"{name}'s second kernel set could not run ({one_line(e)})")
            continue
        runs.append((other_name, other))
        spreads.append(
            compare_outputs(
                outputs, other, tolerance, reference_name=name, candidate_name=other_name
            )
        )
    if not spreads:
        return parity
    refs, cands = sides
    pairs = [
        compare_outputs(a, b, tolerance, reference_name=a_name, candidate_name=b_name)
        for i, (a_name, a) in enumerate(refs)
        for j, (b_name, b) in enumerate(cands)
        if i or j  # the first pair is ``parity`` itself
    ]
    excuse_source_noise(parity, spreads, pairs)
    return parity


NUDGE = 2.0**-20
"""How far ``unoptimized_ort`` moves each float input element of a quantized model, up or
down at random: a few float32 roundings."""
NUDGED_RUNS = 8


def unoptimized_ort(model: Model, feeds: Sequence[Mapping[str, np.ndarray]]) -> SecondOpinion:
    """ONNX Runtime's second opinion on ``model``: every graph optimization off, so no fused
    or re-laid-out kernels (a deep CNN's outputs move by up to 2e-4 of their range); run
    once, when first asked.

    A model that rounds its activations to quantization steps (``qdq.quantizes_activations``)
    flips a value on a step's edge wherever a float rounding before it differs, and the flips
    grow layer by layer: a QDQ CNN's output moved a step between OpenVINO and ONNX Runtime,
    ddddocr's ``quantize_dynamic`` recognizer (steps computed per call) 0.1-0.3 on its logits,
    as much as between inputs a millionth apart. Its second opinion is the run, of
    ``NUDGED_RUNS`` at inputs moved by ``NUDGE``, farthest from the run at the inputs
    themselves: how far the model's own output moves under float roundings.
    """

    def run() -> tuple[list[dict[str, np.ndarray]], str]:
        runner = unoptimized_runner(model)
        plain = [runner.run(f) for f in feeds]
        if not quantizes_activations(model.proto):
            return plain, runner.name
        rngs = [np.random.default_rng(seed) for seed in range(NUDGED_RUNS)]
        nudged = [[runner.run(_nudged(f, rng)) for f in feeds] for rng in rngs]
        farthest = max(nudged, key=lambda outputs: _distance(plain, outputs))
        return farthest, f"{runner.name} at inputs moved by 2^-20 of themselves"

    return functools.cache(run)


def _nudged(feeds: Mapping[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``feeds`` with each float element moved by ``NUDGE`` of itself, up or down."""
    moved = {}
    for name, value in feeds.items():
        array = np.asarray(value)
        if array.dtype.kind == "f":
            signs = rng.choice(np.array([-1.0, 1.0]), size=array.shape)
            array = (array * (1.0 + NUDGE * signs)).astype(array.dtype)
        moved[name] = array
    return moved


def _distance(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]]) -> float:
    """The largest difference between two runs' float outputs where both are finite,
    relative to each output's largest value."""
    widest = 0.0
    for x, y in zip(a, b, strict=True):
        for name, value in x.items():
            p, q = np.asarray(value), np.asarray(y[name])
            if p.dtype.kind != "f" or p.shape != q.shape:
                continue
            finite = np.isfinite(p) & np.isfinite(q)
            if finite.any():
                scale = float(np.abs(p[finite]).max()) or 1.0
                widest = max(widest, float(np.abs(p[finite] - q[finite]).max()) / scale)
    return widest


def excuse_output_steps(parity: Parity, steps: Mapping[str, float]) -> None:
    """Pass the float outputs of ``parity`` that take values on a quantization's grid of step
    ``steps[name]`` (a DequantizeLinear's output) and fail on their values by no more than one
    step: the two runtimes rounded a value on a step's edge each their own way, which no
    tolerance finer than the grid can tell from a right answer."""
    for output in parity.outputs:
        step = steps.get(output.name)
        if output.passed or output.problem or output.kind != "float" or not step:
            continue
        if output.nan_mismatches or output.inf_mismatches or output.required_atol is None:
            continue
        if output.required_atol <= step * (1 + 1e-6):
            output.passed, output.step = True, step


def excuse_source_noise(parity: Parity, spreads: Sequence[Parity], pairs: Sequence[Parity]) -> None:
    """Pass the outputs of ``parity`` that fail on their values by no more than the runtimes'
    own numerical noise, and say so in ``parity.notes``.

    ``spreads`` judge a runtime's second kernel set against its first, on the same feeds: the
    reference's (TFLite's reference kernels; ONNX Runtime with no graph optimization) and,
    where measured, the candidate's. ``pairs`` judge the other pairings of a reference run
    with a candidate run. A failing float output passes when the nearest pairing (``parity``
    itself or one of ``pairs``) needs no larger an atol, at the tolerance's rtol, than the
    largest spread: the two sides are as close as one side's own kernel sets are to each
    other. Outputs that fail for any other reason (names, shapes, NaN on one side, exact
    kinds) are left failed.
    """
    for output in parity.outputs:
        if output.passed or output.problem or output.kind != "float":
            continue
        if output.nan_mismatches or output.inf_mismatches:
            continue
        noises = _needs(spreads, output.name)
        nearest = min(
            (
                n
                for _, n in [(parity, output.required_atol), *_needs(pairs, output.name)]
                if n is not None
            ),
            default=None,
        )
        if not noises or nearest is None:
            continue
        widest, noise = max(noises, key=lambda pair: pair[1] or 0.0)
        if noise is None or nearest > noise:
            continue
        output.passed, output.source_noise, output.noise_atol = True, noise, nearest
        parity.notes.append(
            f"{output.name!r}: {parity.candidate} needs atol {output.required_atol or 0.0:.3g} "
            f"against {parity.reference}, the nearest pair of their kernel sets {nearest:.3g}, "
            f"where {widest.candidate} needs {noise:.3g} against {widest.reference}: within "
            "the runtimes' own numerical noise"
        )


def _needs(judged: Sequence[Parity], name: str) -> list[tuple[Parity, float | None]]:
    """Each judgement's required atol for output ``name`` (where it has that output)."""
    return [(p, o.required_atol) for p in judged for o in p.outputs if o.name == name]


def judge_output(
    name: str, refs: Sequence[np.ndarray], cands: Sequence[np.ndarray], atol: float, rtol: float
) -> OutputParity:
    """Compare one tensor over samples: shapes, then dtype kinds, then values.

    A sequence of maps (scikit-learn's ZipMap probabilities) is judged as the table of its
    values, one row per map and one column per key, once both sides have the same keys."""
    keys = {map_keys(a) for a in (*refs, *cands)}
    if len(keys) > 1 and None not in keys:
        result = _new_result(name, refs[0], cands[0], atol, rtol)
        shown = sorted(str(sorted(k, key=str)) for k in keys if k is not None)
        result.problem = f"map keys differ: {' vs '.join(shown)}"
        return result
    if len(keys) == 1 and None not in keys:
        refs, cands = [map_table(r) for r in refs], [map_table(c) for c in cands]
    refs, cands = [_numbers(r) for r in refs], [_numbers(c) for c in cands]
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
        judge_float(result, refs, cands)
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


def _numbers(array: np.ndarray) -> np.ndarray:
    """An object array of numbers (a sequence of tensors: a multi-output classifier's
    probabilities, one ``[batch, classes]`` per output) as float64, judged as floats rather
    than compared exactly; any other array as it is."""
    if array.dtype != object or not array.size:
        return array
    items = array.ravel().tolist()
    if all(isinstance(x, (int, float, np.number)) and not isinstance(x, bool) for x in items):
        return array.astype(np.float64)
    return array


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


def _as_text(array: np.ndarray) -> np.ndarray:
    items = [
        x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)
        for x in array.ravel().tolist()
    ]
    return np.array(items, dtype=object).reshape(array.shape)
