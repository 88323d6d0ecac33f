"""`ferry compare`: parity of two ONNX models, of one model on two providers, or of an ONNX
model and the framework model it came from.

    report = compare("model.onnx", "model.fp16.onnx", tolerance=Tolerance(atol=1e-2))
    report = compare("model.onnx", provider="cpu", provider_b="cuda", samples=5)
    report = compare("model.onnx", provider_b="openvino", precision="fp16")  # b at fp16
    report = compare("model.onnx", "train.py:make_model", input_shapes={"x": (1, 3, 32, 32)})
    report.ok, report.result.worst, report.result.divergence
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .bisect import bisect_samples, shared_tensors
from .convert import compare_to_source, detect_framework, is_factory
from .data import load_feeds
from .errors import FerryError, InputError, UsageError
from .feeds import feed_sets
from .model import Model
from .parity import Parity, Tolerance, compare_within_noise, unoptimized_ort
from .parity.tolerance import between_runtimes, low_precision_note
from .report import Report
from .runtime import OrtRunner, SessionConfig, provider_name, short_provider_name
from .view import marked_figure

Feeds = Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]]


def compare(
    a: str | Path | Model,
    b: Any = None,
    *,
    framework: str | None = None,
    provider: str = "cpu",
    provider_b: str | None = None,
    threads: int | None = None,
    inputs: str | Path | Feeds | None = None,
    samples: int = 3,
    dims: Mapping[str, int] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    seed: int = 0,
    tolerance: Tolerance | None = None,
    bisect_on_failure: bool = True,
    trust_pickle: bool = False,
    example_inputs: Any = None,
    precision: str = "fp32",
    engine_cache: str | Path | None = None,
    calibration_table: str | Path | None = None,
    graph_outputs: Sequence[str] = (),
    bindings: Mapping[str, bool | int | float] | None = None,
) -> Report[Parity]:
    """Parity of two ONNX models, of one model on two providers, or of an ONNX model and its
    framework source (``ferry compare``).

        report = compare("model.onnx", "model.fp16.onnx", tolerance=Tolerance(atol=1e-2))
        report = compare("model.onnx", provider="cpu", provider_b="cuda", samples=5)
        report = compare("model.onnx", "train.py:make_model", input_shapes={"x": (1, 3, 32, 32)})
        report.ok, report.result.worst, report.result.divergence

    ``a`` is the reference and runs on ``provider``. ``b`` is a second ONNX model (a path or
    a Model), run on ``provider_b`` if given, else on ``provider``; or None with
    ``provider_b``, to compare ``a`` on two providers; or the framework model ``a`` came from,
    anything ``convert`` takes (``framework`` names it when its file does not tell): then
    ``a`` runs on ONNX Runtime against ``b`` in its own framework, judged with the framework's
    tolerance unless ``tolerance`` is given (``convert.compare_to_source``; ``provider_b``,
    ``threads``, ``samples``, ``dims``, ``seed`` and ``bisect_on_failure`` are for ONNX pairs;
    ``graph_outputs`` and ``bindings``, as ``convert`` takes them, for a TensorFlow graph).
    One model on two providers is judged at ``parity.tolerance.between_runtimes`` unless
    ``tolerance`` is given: float16's for a model whose weights are float16.

    ``inputs`` are feeds, or a file or test-data directory of them (read against a's inputs),
    each checked against a. Without them, ``samples`` feed sets are generated from a by the
    one feed policy, which ``convert`` verifies a on too (``feeds.feed_sets``: sizes from
    ``dims`` / ``input_shapes``, else the first that run; the report's notes say which were
    chosen). On failure two ONNX models are bisected to the
    first shared tensor that diverges.

    ``precision`` (with ``engine_cache`` and ``calibration_table``) is what B's provider
    computes in (tensorrt: fp16, int8; openvino: fp16; see ``runtime.SessionConfig``); A, the
    reference, runs at fp32, so the report says what B's precision loses.

    Where B misses A beyond the tolerance and A runs on the CPU, A runs once more with every
    graph optimization off: an output B gives as close to either run of A as the two are to
    each other passes as A's own noise, and the summary says so
    (``parity.compare_within_noise``).
    """
    model_a = _as_model(a)
    feeds = load_feeds(inputs, model_a.signature) if isinstance(inputs, (str, Path)) else inputs
    if b is not None and (is_factory(b) or (framework or detect_framework(b)) != "onnx"):
        if precision != "fp32":
            raise UsageError(
                f"precision {precision} is for an ONNX B on tensorrt or openvino",
                hint="compare against the framework source at fp32",
            )
        return compare_to_source(
            model_a,
            b,
            framework=framework,
            inputs=feeds,
            input_shapes=input_shapes,
            provider=provider,
            tolerance=tolerance,
            trust_pickle=trust_pickle,
            example_inputs=example_inputs,
            graph_outputs=graph_outputs,
            bindings=bindings,
        )
    if graph_outputs or bindings:
        raise UsageError(
            "--graph-outputs and --bind choose a TensorFlow graph's tensors, and B is no "
            "TensorFlow source",
            hint="give them only when B is a frozen .pb or a checkpoint",
        )
    if b is None and provider_b is None:
        raise UsageError(
            "compare needs a second model or a second provider",
            hint="give B, or provider_b (e.g. 'cuda') to compare one model on two providers",
        )
    model_b = model_a if b is None else _as_model(b)
    if model_b is not model_a:
        _check_same_inputs(model_a, model_b)
    notes: list[str] = []
    if tolerance is None and model_b is model_a:  # one model on two providers
        tolerance = between_runtimes(model_a)
        notes += filter(None, [low_precision_note(model_a)])
    tolerance = tolerance or Tolerance()
    wanted_a, wanted_b = provider, provider_b or provider
    config_a = SessionConfig(provider=wanted_a, threads=threads)
    config_b = SessionConfig(
        provider=wanted_b,
        threads=threads,
        precision=precision,
        engine_cache=None if engine_cache is None else Path(engine_cache),
        calibration_table=None if calibration_table is None else Path(calibration_table),
    )
    sets, plan = feed_sets(
        model_a,
        feeds,
        count=samples,
        seed=seed,
        dims=dims,
        input_shapes=input_shapes,
        where=model_a.name,
    )
    if plan is not None:
        notes.append(f"generated inputs {plan.describe()}")
        notes += [f"chose {c}" for c in plan.choices]
    runner_a = OrtRunner(model_a, config=config_a)
    runner_b = OrtRunner(model_b, config=config_b)
    for runner, wanted in ((runner_a, wanted_a), (runner_b, wanted_b)):
        if runner.provider != short_provider_name(provider_name(wanted)):
            notes.append(
                f"{runner.model.name}: provider {wanted!r} was not used; ran on {runner.provider}"
            )
    # A on the CPU gives a second opinion on its own noise: itself with no graph optimization
    second = unoptimized_ort(model_a, sets) if runner_a.provider == "cpu" else None
    parity = compare_within_noise(
        [runner_a.run(f) for f in sets],
        [runner_b.run(f) for f in sets],
        tolerance,
        second=second,
        reference_name=runner_a.name,
        candidate_name=runner_b.name,
    )
    if not parity.ok and bisect_on_failure:
        notes.append(_bisect_note(parity, model_a, model_b, sets, tolerance, config_a, config_b))
        notes += _divergence_graph(parity, model_a)
    return Report(verb="compare", result=parity, notes=notes)


def _bisect_note(
    parity: Parity,
    model_a: Model,
    model_b: Model,
    feeds: Sequence[Mapping[str, np.ndarray]],
    tolerance: Tolerance,
    config_a: SessionConfig,
    config_b: SessionConfig,
) -> str:
    """Bisect into ``parity.divergence``; returns a note saying what bisection found."""
    if not shared_tensors(model_a, model_b):
        return "bisection skipped: the two models share no intermediate tensor names"
    try:
        parity.divergence = bisect_samples(model_a, model_b, feeds, tolerance, config_a, config_b)
    except FerryError as e:
        return f"bisection failed: {e}"
    d = parity.divergence
    if d is None:
        return "bisection found no shared tensor that diverges"
    return f"bisection: first divergence at {d.tensor!r}, output of {d.op_type} node {d.node!r}"


def _divergence_graph(parity: Parity, model: Model) -> list[str]:
    """Draw ``model`` with the first diverging tensor marked into ``parity.graphs`` (the HTML
    report shows it); a note saying why when it cannot be drawn (no Graphviz)."""
    if parity.divergence is None:
        return []
    svg, why = marked_figure(model, parity.divergence.tensor)
    if svg is not None:
        parity.graphs.append(svg)
    return [] if why is None else [why]


def _as_model(value: str | Path | Model) -> Model:
    """A's model; a framework source given first (which ONNX cannot load) is a UsageError
    saying the order."""
    if isinstance(value, Model):
        return value
    try:
        return Model.load(value)
    except FerryError as e:
        try:
            found = "a factory" if is_factory(str(value)) else detect_framework(value)
        except FerryError:
            raise e from None
        if found == "onnx":
            raise
        raise UsageError(
            f"{value} is {found if found == 'a factory' else f'a {found} model'}, and compare "
            "takes the ONNX model first",
            hint=f"give the ONNX model, then its source: ferry compare MODEL.onnx {value}",
        ) from None


def _check_same_inputs(a: Model, b: Model) -> None:
    ins_a = {s.name: s.dtype.onnx_name for s in a.signature.inputs}
    ins_b = {s.name: s.dtype.onnx_name for s in b.signature.inputs}
    if ins_a == ins_b:
        return
    diffs = [f"{n!r} only in {a.name}" for n in ins_a if n not in ins_b]
    diffs += [f"{n!r} only in {b.name}" for n in ins_b if n not in ins_a]
    diffs += [
        f"{n!r} is {ins_a[n]} in {a.name} but {ins_b[n]} in {b.name}"
        for n in ins_a
        if n in ins_b and ins_a[n] != ins_b[n]
    ]
    raise InputError(
        f"{a.name} and {b.name} take different inputs: {'; '.join(diffs)}",
        hint="compare models with the same input names and dtypes",
    )
