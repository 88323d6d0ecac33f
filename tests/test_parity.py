"""Parity: the judge of two runners' outputs, checked with real ONNX Runtime."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from onnxferry.errors import UsageError
from onnxferry.model import Model
from onnxferry.parity import (
    OutputParity,
    Parity,
    Tolerance,
    compare_outputs,
    compare_runners,
    judge_output,
)
from onnxferry.parity.judge import compare_within_noise, excuse_source_noise, unoptimized_ort
from onnxferry.runtime import OrtRunner, SessionConfig, unoptimized_runner

from .helpers import deep_mlp, mlp, mlp_feeds, mlp_with_logits, onnx_text, save

OUTPUT_KEYS = [
    "name",
    "kind",
    "passed",
    "problem",
    "ref_dtype",
    "cand_dtype",
    "ref_shape",
    "cand_shape",
    "atol",
    "rtol",
    "max_abs",
    "mean_abs",
    "p99_abs",
    "max_rel",
    "mean_rel",
    "p99_rel",
    "cosine",
    "cosine_min",
    "top1",
    "top5",
    "exact_match",
    "nan_mismatches",
    "inf_mismatches",
    "required_atol",
    "required_rtol",
    "source_noise",
    "noise_atol",
    "step",
    "tied",
]
PARITY_KEYS = [
    "reference",
    "candidate",
    "samples",
    "ok",
    "summary",
    "tolerance",
    "problems",
    "worst",
    "outputs",
    "divergence",
    "notes",
]


def runner(proto: onnx.ModelProto, config: SessionConfig | None = None) -> OrtRunner:
    return OrtRunner(Model.from_proto(proto), config=config)


def run_all(
    proto: onnx.ModelProto, sets: list[dict[str, np.ndarray]]
) -> list[dict[str, np.ndarray]]:
    r = runner(proto)
    return [r.run(f) for f in sets]


# --- the judge ------------------------------------------------------------------------------


def test_identical_models_pass_with_zero_error() -> None:
    parity = compare_runners(runner(mlp()), runner(mlp()), mlp_feeds(3))
    assert parity.ok
    assert parity.worst is None
    (out,) = parity.outputs
    assert out.name == "probs"
    assert out.kind == "float"
    assert out.passed
    assert out.max_abs == 0.0
    assert out.max_rel == 0.0
    assert out.required_atol == 0.0
    assert out.required_rtol == 0.0
    assert out.cosine == pytest.approx(1.0)
    assert out.top1 == 1.0
    assert out.exact_match is None
    assert out.nan_mismatches == 0
    assert "match" in parity.summary()


def test_perturbed_model_fails_names_worst_and_required_atol_is_exact() -> None:
    sets = mlp_feeds(3)
    ref = run_all(mlp_with_logits(mlp()), sets)
    cand = run_all(mlp_with_logits(mlp(noise=0.05)), sets)
    tol = Tolerance(atol=1e-5, rtol=1e-4)
    parity = compare_outputs(ref, cand, tol, reference_name="a", candidate_name="b")

    assert not parity.ok
    worst = parity.worst
    assert worst is not None
    assert worst.name == "logits"  # logits move more than the probabilities
    assert "'logits'" in parity.summary()
    assert worst.max_abs is not None
    assert worst.max_abs > 1e-3
    # the statistics agree with a direct numpy computation
    r = np.concatenate([s["logits"].ravel() for s in ref]).astype(np.float64)
    c = np.concatenate([s["logits"].ravel() for s in cand]).astype(np.float64)
    assert worst.max_abs == pytest.approx(np.abs(c - r).max())
    assert worst.mean_abs == pytest.approx(np.abs(c - r).mean())

    for out in parity.outputs:
        assert out.required_atol is not None
        assert out.required_rtol is not None
        atol = out.required_atol
        passing = Tolerance(atol=atol, rtol=tol.rtol)
        failing = Tolerance(atol=float(np.nextafter(atol, 0.0)), rtol=tol.rtol)
        assert _output(compare_outputs(ref, cand, passing), out.name).passed
        assert not _output(compare_outputs(ref, cand, failing), out.name).passed

        rtol = out.required_rtol
        passing = Tolerance(atol=tol.atol, rtol=rtol)
        failing = Tolerance(atol=tol.atol, rtol=float(np.nextafter(rtol, 0.0)))
        assert _output(compare_outputs(ref, cand, passing), out.name).passed
        assert not _output(compare_outputs(ref, cand, failing), out.name).passed


def _output(parity: Parity, name: str) -> OutputParity:
    return next(o for o in parity.outputs if o.name == name)


TWO_OUT = """
<ir_version: 10, opset_import: ["" : 21]>
a (float[N, 4] x) => (float[N, 4] y, float[N, 4] w) { y = Relu(x)  w = Neg(x) }
"""
TRANSPOSED = """
<ir_version: 10, opset_import: ["" : 21]>
b (float[N, 4] x) => (float[4, N] y, float[N, 4] v) { y = Transpose(x)  v = Neg(x) }
"""
SCALED = """
<ir_version: 10, opset_import: ["" : 21]>
c (float[N, 4] x) => (float[4, N] y) { t = Transpose(x)  y = Mul(t, t) }
"""


def test_outputs_empty_on_every_sample_are_not_a_pass() -> None:
    """`ferry compare --inputs` with 0 rows compared nothing and said "compare: ok"."""
    empty = {"probs": np.zeros((0, 3), np.float32)}
    parity = compare_outputs([empty, empty], [empty, empty])
    assert not parity.ok
    assert "nothing was compared" in parity.problems[0]
    some = {"probs": np.ones((1, 3), np.float32)}
    assert compare_outputs([empty, some], [empty, some]).ok  # one sample with values counts


def test_output_names_are_checked_before_shapes() -> None:
    parity = compare_runners(
        runner(onnx_text(TWO_OUT)), runner(onnx_text(TRANSPOSED)), mlp_feeds(1, batch=3)
    )
    assert not parity.ok
    assert any("'w'" in p and "missing" in p for p in parity.problems)
    assert any("'v'" in p and "extra" in p for p in parity.problems)
    assert [o.name for o in parity.outputs] == ["y"]  # the common output is still compared
    summary = parity.summary()
    assert summary.index("missing") < summary.index("shape")


def test_shapes_are_checked_before_values() -> None:
    relu = onnx_text(TWO_OUT.replace(", float[N, 4] w", "").replace("w = Neg(x)", ""))
    parity = compare_runners(runner(relu), runner(onnx_text(SCALED)), mlp_feeds(2, batch=3))
    (out,) = parity.outputs
    assert not parity.ok
    assert not parity.problems
    assert out.problem is not None
    assert "shape" in out.problem
    assert (out.ref_shape, out.cand_shape) == ((3, 4), (4, 3))
    assert out.max_abs is None  # values were not compared
    assert out.required_atol is None
    assert parity.worst is out


EXACT = """
<ir_version: 10, opset_import: ["" : 21]>
e (float[N, 4] x) => (int64[N, 1] idx, bool[N, 4] pos, string[N, 4] s) {
    idx = ArgMax <axis = 1> (x)
    t = Constant <value = float {THRESH}> ()
    pos = Greater(x, t)
    r = Round(x)
    s = Cast <to = 8> (r)
}
"""


def _classified(labels: list[object], scores: list[list[float]]) -> dict[str, np.ndarray]:
    return {"label": np.array(labels), "probabilities": np.array(scores, np.float32)}


@pytest.mark.parametrize(
    ("candidate", "passes", "tied"),
    [
        # row 1 ties 0.5 / 0.5 on both sides: the argmax of equal scores may go either way
        (_classified([0, 1, 1], [[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]]), True, 1),
        # the same, the scores as scikit-learn's ZipMap maps
        (
            {
                **_classified([0, 1, 1], []),
                "probabilities": np.array(
                    [{0: 0.9, 1: 0.1}, {0: 0.5, 1: 0.5}, {0: 0.2, 1: 0.8}], dtype=object
                ),
            },
            True,
            1,
        ),
        # row 0 differs where the scores do not tie: a different answer
        (_classified([1, 0, 1], [[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]]), False, None),
        # the scores themselves differ past the tolerance: nothing is excused
        (_classified([0, 1, 1], [[0.9, 0.1], [0.5, 0.5 + 2e-4], [0.2, 0.8]]), False, None),
    ],
)
def test_a_label_that_differs_only_where_the_scores_tie_passes(
    candidate: dict[str, np.ndarray], passes: bool, tied: int | None
) -> None:
    """A forest of 20 trees split 10 to 10 answers 0.5 and 0.5; which class an argmax of
    equal scores picks is rounding, so such a row does not fail the label, and is counted."""
    reference = _classified([0, 0, 1], [[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]])
    if isinstance(candidate["probabilities"][0], dict):
        reference["probabilities"] = np.array(
            [{0: 0.9, 1: 0.1}, {0: 0.5, 1: 0.5}, {0: 0.2, 1: 0.8}], dtype=object
        )
    parity = compare_outputs([reference], [candidate], Tolerance(atol=1e-4, rtol=0))
    label = next(o for o in parity.outputs if o.name == "label")
    assert label.exact_match is not None and label.exact_match < 1
    assert (label.passed, label.tied) == (passes, tied)
    assert parity.ok == (passes and all(o.passed for o in parity.outputs))
    assert any("ties" in n for n in parity.notes) == passes


def test_a_sequence_of_float_tensors_is_judged_as_floats() -> None:
    """A multi-output classifier's probabilities: one [N, K] tensor per output, a sequence
    that arrives as an object array of numbers; compared as objects, float32 rounding failed
    them. Its labels [N, O] tie per output as a plain classifier's do."""
    probabilities = np.empty((2, 2, 2), dtype=object)
    probabilities[...] = [[[0.9, 0.1], [0.5, 0.5]], [[0.3, 0.7], [0.2, 0.8]]]
    reference = {"label": np.array([[0, 1], [0, 1]]), "probabilities": probabilities}
    candidate = {
        "label": np.array([[0, 1], [1, 1]]),  # row 1 of output 0 ties
        "probabilities": probabilities.astype(np.float32).astype(object) + 1e-8,
    }
    parity = compare_outputs([reference], [candidate], Tolerance(atol=1e-4, rtol=0))
    assert [(o.name, o.kind, o.passed) for o in parity.outputs] == [
        ("label", "exact", True),
        ("probabilities", "float", True),
    ]
    assert parity.outputs[0].tied == 1


def test_integer_bool_and_string_outputs_match_exactly() -> None:
    sets = mlp_feeds(2, batch=8)
    same = compare_runners(
        runner(onnx_text(EXACT.replace("THRESH", "0.0"))),
        runner(onnx_text(EXACT.replace("THRESH", "0.0"))),
        sets,
    )
    assert same.ok
    assert {o.name: o.kind for o in same.outputs} == {"idx": "exact", "pos": "exact", "s": "exact"}
    for out in same.outputs:
        assert out.exact_match == 1.0
        assert out.max_abs is None
        assert out.cosine is None
        assert out.required_atol is None

    other = EXACT.replace("THRESH", "0.5").replace("ArgMax", "ArgMin").replace("Round(x)", "Neg(x)")
    diff = compare_runners(
        runner(onnx_text(EXACT.replace("THRESH", "0.0"))), runner(onnx_text(other)), sets
    )
    assert not diff.ok
    ref = [runner(onnx_text(EXACT.replace("THRESH", "0.0"))).run(f) for f in sets]
    cand = [runner(onnx_text(other)).run(f) for f in sets]
    for out in diff.outputs:
        equal = sum(int(np.sum(r[out.name] == c[out.name])) for r, c in zip(ref, cand, strict=True))
        total = sum(r[out.name].size for r in ref)
        assert out.exact_match == pytest.approx(equal / total)
        assert out.exact_match is not None
        assert out.exact_match < 1.0
        assert not out.passed
    # an exact failure is worse than any float one: it is the worst
    assert diff.worst is not None


def test_float_dtypes_mix_but_float_and_integer_do_not() -> None:
    ref = run_all(mlp(), mlp_feeds(1))
    half = [{"probs": ref[0]["probs"].astype(np.float16)}]
    parity = compare_outputs(ref, half, Tolerance(atol=1e-3, rtol=1e-3))
    (out,) = parity.outputs
    assert out.problem is None
    assert (out.ref_dtype, out.cand_dtype) == ("float32", "float16")
    assert parity.ok

    ints = [{"probs": np.zeros(ref[0]["probs"].shape, dtype=np.int64)}]
    (bad,) = compare_outputs(ref, ints).outputs
    assert bad.problem is not None
    assert "dtype" in bad.problem
    assert not bad.passed


LOG = """
<ir_version: 10, opset_import: ["" : 21]>
l (float[N, 4] x) => (float[N, 4] y) { y = Log(x) }
"""
LOG_RELU = """
<ir_version: 10, opset_import: ["" : 21]>
l (float[N, 4] x) => (float[N, 4] y) { r = Relu(x)  y = Log(r) }
"""
RECIP = """
<ir_version: 10, opset_import: ["" : 21]>
r (float[N, 4] x) => (float[N, 4] y) { one = Constant <value = float {1.0}> ()  y = Div(one, x) }
"""
RECIP_ABS = """
<ir_version: 10, opset_import: ["" : 21]>
r (float[N, 4] x) => (float[N, 4] y) {
    one = Constant <value = float {1.0}> ()
    a = Abs(x)
    y = Div(one, a)
}
"""


def test_nan_and_inf_mismatches_are_counted() -> None:
    x = np.array([[-1.0, 0.0, 1.0, 2.0], [0.0, 4.0, -3.0, 5.0]], dtype=np.float32)
    # Log(x) is NaN for x < 0 where Log(Relu(x)) is -inf; Log(0) = -inf on both sides
    parity = compare_runners(runner(onnx_text(LOG)), runner(onnx_text(LOG_RELU)), [{"x": x}])
    (out,) = parity.outputs
    assert (out.nan_mismatches, out.inf_mismatches) == (2, 0)
    assert not out.passed
    assert out.required_atol == math.inf
    assert out.required_rtol == math.inf
    assert "NaN" in parity.summary()

    # 1/x and 1/|x| agree at x = 0 (+inf) but not at x = -0.0 (-inf vs +inf)
    x = np.array([[0.0, -0.0, 2.0, 4.0]], dtype=np.float32)
    (out,) = compare_runners(
        runner(onnx_text(RECIP)), runner(onnx_text(RECIP_ABS)), [{"x": x}]
    ).outputs
    assert (out.nan_mismatches, out.inf_mismatches) == (0, 1)
    assert not out.passed
    x = np.array([[0.0, 1.0, 2.0, 4.0]], dtype=np.float32)
    (out,) = compare_runners(
        runner(onnx_text(RECIP)), runner(onnx_text(RECIP_ABS)), [{"x": x}]
    ).outputs
    assert out.passed  # +inf against +inf is equal

    # NaN on both sides at the same place is equal; at different places it is not
    nan = float("nan")
    ref = [{"y": np.array([1.0, nan, np.inf, -np.inf])}]
    assert compare_outputs(ref, [{"y": np.array([1.0, nan, np.inf, -np.inf])}]).ok
    (out,) = compare_outputs(ref, [{"y": np.array([nan, 1.0, np.inf, np.inf])}]).outputs
    assert (out.nan_mismatches, out.inf_mismatches) == (2, 1)


def test_top1_agreement_on_a_softmax_output() -> None:
    sets = mlp_feeds(4, batch=16)
    ref = run_all(mlp(classes=6), sets)
    cand = run_all(mlp(classes=6, noise=0.8), sets)
    (out,) = compare_outputs(ref, cand).outputs
    r = np.concatenate([s["probs"] for s in ref])
    c = np.concatenate([s["probs"] for s in cand])
    expected = float(np.mean(np.argmax(r, axis=1) == np.argmax(c, axis=1)))
    assert out.top1 == pytest.approx(expected)
    assert 0.0 < expected < 1.0
    top5_r = np.argsort(-r, axis=1)[:, :5]
    top5_c = np.argsort(-c, axis=1)[:, :5]
    overlap = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(top5_r, top5_c, strict=True)])
    assert out.top5 == pytest.approx(overlap)

    (three,) = compare_outputs(run_all(mlp(), sets), run_all(mlp(noise=0.8), sets)).outputs
    assert three.top1 is not None
    assert three.top5 is None  # fewer than 5 classes


def test_cosine_min_shows_the_worst_sample() -> None:
    sets = mlp_feeds(3)
    ref = run_all(mlp_with_logits(mlp()), sets)
    cand = run_all(mlp_with_logits(mlp()), sets[:2]) + run_all(
        mlp_with_logits(mlp(seed=7)), sets[2:]
    )
    out = _output(compare_outputs(ref, cand), "logits")
    assert out.cosine is not None
    assert out.cosine_min is not None
    assert out.cosine_min < out.cosine
    r, c = ref[2]["logits"].ravel(), cand[2]["logits"].ravel()
    expected = float(np.dot(r, c) / (np.linalg.norm(r) * np.linalg.norm(c)))
    assert out.cosine_min == pytest.approx(expected, abs=1e-6)


def test_per_output_tolerance_override() -> None:
    sets = mlp_feeds(2)
    ref = run_all(mlp_with_logits(mlp()), sets)
    cand = run_all(mlp_with_logits(mlp(noise=0.05)), sets)
    tol = Tolerance(atol=1e-6, rtol=0.0, per_output={"logits": (10.0, 0.0)})
    assert tol.for_output("logits") == (10.0, 0.0)
    assert tol.for_output("probs") == (1e-6, 0.0)
    parity = compare_outputs(ref, cand, tol)
    logits, probs = _output(parity, "logits"), _output(parity, "probs")
    assert logits.passed
    assert (logits.atol, logits.rtol) == (10.0, 0.0)
    assert not probs.passed
    assert parity.worst is probs
    assert tol.to_dict()["per_output"] == {"logits": {"atol": 10.0, "rtol": 0.0}}
    with pytest.raises(UsageError):
        Tolerance(atol=-1.0)


def test_sample_counts_must_agree() -> None:
    ref = run_all(mlp(), mlp_feeds(2))
    with pytest.raises(UsageError):
        compare_outputs(ref, ref[:1])
    with pytest.raises(UsageError):
        compare_outputs([], [])


def test_non_finite_statistics_stay_valid_json() -> None:
    x = np.array([[-1.0, 0.0, 1.0, 2.0]], dtype=np.float32)
    parity = compare_runners(runner(onnx_text(LOG)), runner(onnx_text(LOG_RELU)), [{"x": x}])
    from onnxferry.report import Report

    data = json.loads(Report(verb="compare", result=parity).to_json())
    assert data["result"]["outputs"][0]["required_atol"] == "inf"


@settings(max_examples=60, deadline=None)
@given(
    ref=hnp.arrays(
        st.sampled_from([np.float16, np.float32, np.float64]),
        hnp.array_shapes(min_dims=1, max_dims=3, max_side=6),
        elements=st.floats(-1e3, 1e3, width=16),
    ),
    noise_seed=st.integers(0, 2**16),
    scale=st.sampled_from([0.0, 1e-6, 1e-3, 1.0]),
    rtol=st.sampled_from([0.0, 1e-3]),
)
def test_required_atol_is_the_smallest_that_passes(
    ref: np.ndarray, noise_seed: int, scale: float, rtol: float
) -> None:
    noise = np.random.default_rng(noise_seed).standard_normal(ref.shape) * scale
    cand = (ref.astype(np.float64) + noise).astype(ref.dtype)
    out = _output(compare_outputs([{"y": ref}], [{"y": cand}], Tolerance(0.0, rtol)), "y")
    assert out.required_atol is not None and math.isfinite(out.required_atol)
    at = compare_outputs([{"y": ref}], [{"y": cand}], Tolerance(out.required_atol, rtol))
    assert _output(at, "y").passed
    if out.required_atol > 0:
        below = Tolerance(float(np.nextafter(out.required_atol, 0.0)), rtol)
        assert not _output(compare_outputs([{"y": ref}], [{"y": cand}], below), "y").passed


def test_sequences_of_maps_are_judged_as_tables_of_values() -> None:
    ref = np.array([{0: 0.25, 1: 0.75}, {0: 0.5, 1: 0.5}], dtype=object)
    close = np.array(
        [{0: np.float32(0.25), 1: np.float32(0.7500001)}, {1: 0.5, 0: 0.5}], dtype=object
    )
    result = judge_output("p", [ref], [close], atol=1e-5, rtol=1e-4)
    assert result.passed and result.kind == "float" and result.ref_shape == (2, 2)
    far = np.array([{0: 0.35, 1: 0.65}, {0: 0.5, 1: 0.5}], dtype=object)
    assert not judge_output("p", [ref], [far], atol=1e-5, rtol=1e-4).passed
    other_keys = np.array([{0: 0.25, 2: 0.75}, {0: 0.5, 2: 0.5}], dtype=object)
    differ = judge_output("p", [ref], [other_keys], atol=1e-5, rtol=1e-4)
    assert not differ.passed and "map keys differ" in (differ.problem or "")


# --- the source's own noise -----------------------------------------------------------------


def _noisy_sets() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A source's outputs on its default kernels and on its second set, 0.02 apart."""
    rng = np.random.default_rng(0)
    y = rng.normal(0, 100, (4, 50)).astype(np.float32)
    noise = rng.uniform(-0.02, 0.02, (4, 50)).astype(np.float32)
    return {"y": y, "n": np.arange(4)}, {"y": y + noise, "n": np.arange(4)}


@pytest.mark.parametrize(
    ("offset", "excused"), [(0.015, True), (-0.015, True), (0.2, False), (np.nan, False)]
)
def test_a_candidate_within_the_sources_own_noise_passes_and_says_so(
    offset: float, excused: bool
) -> None:
    """A candidate as close to one of the source's kernel sets as the two sets are to each
    other passes, with a note giving the three atols; ten times further, or a NaN where the
    source has a number, still fails."""
    first, second = _noisy_sets()
    candidate = {"y": first["y"].copy(), "n": first["n"]}
    candidate["y"][1, ::3] += np.float32(offset)
    tolerance = Tolerance(atol=1e-4, rtol=1e-6)
    parity = compare_outputs([first], [candidate], tolerance, candidate_name="ort")
    assert not parity.ok
    spread = compare_outputs([first], [second], tolerance, candidate_name="ref kernels")
    to_second = compare_outputs([second], [candidate], tolerance, reference_name="ref kernels")
    excuse_source_noise(parity, [spread], [to_second])
    (y, n) = parity.outputs
    assert parity.ok is excused and y.passed is excused and n.passed
    if not excused:
        assert parity.notes == [] and y.source_noise is None and y.noise_atol is None
        return
    assert y.source_noise == spread.outputs[0].required_atol
    assert y.required_atol is not None and y.required_atol > 1e-4  # still recorded as measured
    (note,) = parity.notes
    assert note.startswith("'y': ort needs atol ") and ", where ref kernels needs " in note
    assert note.endswith("within the runtimes' own numerical noise")
    assert y.noise_atol is not None and y.noise_atol <= y.source_noise
    assert parity.summary().endswith(
        f"; 'y' within the runtimes' own noise (atol {y.noise_atol:.3g} between the nearest "
        f"pair of kernel sets, {y.source_noise:.3g} between one runtime's own two)"
    )


def test_exact_outputs_are_never_excused_as_noise() -> None:
    first, second = _noisy_sets()
    candidate = {"y": first["y"], "n": first["n"] + 1}
    parity = compare_outputs([first], [candidate])
    spread = compare_outputs([first], [{**second, "n": first["n"] + 1}])
    excuse_source_noise(parity, [spread], [compare_outputs([second], [candidate])])
    assert not parity.ok and not parity.notes


def test_the_second_opinion_runs_only_when_values_fail_and_its_failure_is_a_note() -> None:
    first, second = _noisy_sets()
    calls: list[int] = []

    def opinion() -> tuple[list[dict[str, np.ndarray]], str]:
        calls.append(1)
        return [second], "ref kernels"

    same = compare_within_noise([first], [first], second=opinion)
    renamed = compare_within_noise([first], [{"z": first["y"], "n": first["n"]}], second=opinion)
    assert same.ok and not renamed.ok and calls == []  # a name problem is no noise
    near = {"y": first["y"] + np.float32(0.01), "n": first["n"]}
    tolerance = Tolerance(atol=1e-4, rtol=1e-6)
    judged = compare_within_noise([first], [near], tolerance, second=opinion)
    assert judged.ok and calls == [1] and judged.outputs[0].source_noise is not None

    def broken() -> tuple[list[dict[str, np.ndarray]], str]:
        raise RuntimeError("no kernel for Foo")

    failed = compare_within_noise([first], [near], tolerance, second=broken)
    assert not failed.ok
    assert failed.notes == ["reference's second kernel set could not run (no kernel for Foo)"]


def test_onnx_runtime_without_graph_optimization_is_a_second_opinion_run_once() -> None:
    model = Model.from_proto(mlp())
    feeds = mlp_feeds(2)
    opinion = unoptimized_ort(model, feeds)
    outputs, name = opinion()
    assert name == f"{OrtRunner(model).name} (no graph optimization)"
    assert opinion()[0] is outputs  # cached: every check of a package shares one run
    parity = compare_outputs([OrtRunner(model).run(f) for f in feeds], list(outputs))
    assert parity.ok and parity.max_abs < 1e-5, parity.summary()


def test_a_model_that_quantizes_by_its_data_is_its_own_second_opinion_at_nudged_inputs(
    tmp_path: Path,
) -> None:
    """quantize_dynamic's DynamicQuantizeLinear rounds at a scale computed per call: inputs a
    millionth apart flip values on a step's edge and move the outputs by steps, which the
    second opinion measures (a float model's is not nudged: the test above)."""
    from onnxruntime.quantization import quantize_dynamic

    save(deep_mlp(256, 512, 10), tmp_path / "float.onnx")
    quantize_dynamic(tmp_path / "float.onnx", tmp_path / "int8.onnx")
    model = Model.load(tmp_path / "int8.onnx")
    feeds = [{"x": np.random.default_rng(i).standard_normal((256, 256)).astype(np.float32)}
             for i in range(2)]  # fmt: skip
    outputs, name = unoptimized_ort(model, feeds)()
    assert name.endswith("(no graph optimization) at inputs moved by 2^-20 of themselves")
    plain = [unoptimized_runner(model).run(f) for f in feeds]
    flips = compare_outputs(plain, list(outputs), Tolerance(atol=1e-5, rtol=1e-5))
    # A step of the last layer's input, not a float rounding: the nudge flipped values.
    assert not flips.ok and flips.max_abs > 1e-3, flips.summary()


def test_an_output_on_a_quantization_grid_passes_a_step_apart_and_no_further() -> None:
    """A DequantizeLinear's output takes values on its scale's grid: a value rounded the other
    way by the candidate's runtime is one step off and passes, named; two steps do not, nor
    an output with no step given."""
    step = np.float32(1 / 255)
    probs = np.round(np.random.default_rng(0).random((4, 5)) / step).astype(np.float32) * step
    one, two = probs.copy(), probs.copy()
    one[1, 2] += step
    two[1, 2] += 2 * step
    reference = [{"probs": probs, "raw": probs}]
    judged = compare_within_noise(reference, [{"probs": one, "raw": probs}], second=None,
                                  steps={"probs": float(step)})  # fmt: skip
    assert judged.ok and judged.outputs[0].step == pytest.approx(step)
    assert "'probs' a step of its quantization apart (step 0.00392)" in judged.summary()
    farther = compare_within_noise(reference, [{"probs": two, "raw": probs}], second=None,
                                   steps={"probs": float(step)})  # fmt: skip
    assert not farther.ok and farther.outputs[0].step is None
    ungridded = compare_within_noise(reference, [{"probs": probs, "raw": one}], second=None,
                                     steps={"probs": float(step)})  # fmt: skip
    assert not ungridded.ok


def test_how_far_a_nudged_run_moved_counts_only_finite_values() -> None:
    """NaN where a model gives NaN (SwiftF0's pitch) neither hides a move nor makes one."""
    from onnxferry.parity.judge import _distance

    plain = [{"y": np.array([np.nan, 2.0, -4.0], np.float32), "n": np.arange(3)}]
    moved = [{"y": np.array([np.nan, 2.5, -4.0], np.float32), "n": np.arange(3)}]
    assert _distance(plain, moved) == pytest.approx(0.125)
    assert _distance(plain, plain) == 0.0
    assert _distance([{"y": np.full(2, np.nan, np.float32)}], [{"y": np.ones(2, np.float32)}]) == 0


def test_the_candidates_own_noise_counts_as_the_references_does() -> None:
    """A package's runtime (LiteRT) has two kernel sets too: a candidate as close to the
    reference as its own two sets are to each other passes, with both sides named."""
    first, _ = _noisy_sets()
    candidate = {"y": first["y"] + np.float32(0.015), "n": first["n"]}
    jitter = np.random.default_rng(1).uniform(-0.03, 0.03, first["y"].shape).astype(np.float32)
    own = {"y": candidate["y"] + jitter, "n": first["n"]}
    tolerance = Tolerance(atol=1e-4, rtol=1e-6)
    alone = compare_within_noise([first], [candidate], tolerance, second=None)
    assert not alone.ok and not alone.notes
    judged = compare_within_noise(
        [first],
        [candidate],
        tolerance,
        second=None,
        candidate_second=lambda: ([own], "litert (reference kernels)"),
        reference_name="onnxruntime",
        candidate_name="litert",
    )
    assert judged.ok, judged.summary()
    (note,) = judged.notes
    assert "where litert (reference kernels) needs" in note and "against litert:" in note
