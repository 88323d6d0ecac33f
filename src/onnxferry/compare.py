"""`ferry compare`: parity of two ONNX models, or of one model on two providers.

report = compare("model.onnx", "model.fp16.onnx", tolerance=Tolerance(atol=1e-2))
report = compare("model.onnx", provider="cpu", provider_b="cuda", samples=5)
report.ok, report.result.worst, report.result.divergence
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .bisect import bisect_samples, shared_tensors
from .errors import FeedError, FerryError, InputError, UsageError
from .feeds import generated_feeds
from .model import Model
from .parity import Parity, Tolerance, compare_runners
from .report import Report
from .runtime import OrtRunner, SessionConfig, provider_name, short_provider_name


def compare(
    a: str | Path | Model,
    b: str | Path | Model | None = None,
    *,
    provider: str = "cpu",
    provider_b: str | None = None,
    threads: int | None = None,
    inputs: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]] | None = None,
    samples: int = 3,
    dims: Mapping[str, int] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    seed: int = 0,
    tolerance: Tolerance = Tolerance(),
    bisect_on_failure: bool = True,
) -> Report[Parity]:
    """Parity of two ONNX models, or of one model on two providers (``ferry compare``).

        report = compare("model.onnx", "model.fp16.onnx", tolerance=Tolerance(atol=1e-2))
        report = compare("model.onnx", provider="cpu", provider_b="cuda", samples=5)
        report.ok, report.result.worst, report.result.divergence

    ``a`` is the reference and runs on ``provider``; ``b`` runs on ``provider_b`` if given,
    else on ``provider``. Without ``inputs``, ``samples`` feed sets are generated from a by
    the one feed policy (``feeds.plan_feeds``: sizes from ``dims`` / ``input_shapes``, else
    the first that run; the report's notes say which were chosen). On failure the two
    models are bisected to the first shared tensor that diverges.
    """
    model_a = _as_model(a)
    if b is None:
        if provider_b is None:
            raise UsageError(
                "compare needs a second model or a second provider",
                hint="give B, or provider_b (e.g. 'cuda') to compare one model on two providers",
            )
        model_b = model_a
    else:
        model_b = _as_model(b)
        _check_same_inputs(model_a, model_b)
    wanted_a, wanted_b = provider, provider_b or provider
    config_a = SessionConfig(provider=wanted_a, threads=threads)
    config_b = SessionConfig(provider=wanted_b, threads=threads)
    notes: list[str] = []
    feeds = _feeds(model_a, inputs, samples, dims, input_shapes, seed, notes)
    runner_a = OrtRunner(model_a, config=config_a)
    runner_b = OrtRunner(model_b, config=config_b)
    for runner, wanted in ((runner_a, wanted_a), (runner_b, wanted_b)):
        if runner.provider != short_provider_name(provider_name(wanted)):
            notes.append(
                f"{runner.model.name}: provider {wanted!r} was not used; ran on {runner.provider}"
            )
    parity = compare_runners(runner_a, runner_b, feeds, tolerance)
    if not parity.ok and bisect_on_failure:
        notes.append(_bisect_note(parity, model_a, model_b, feeds, tolerance, config_a, config_b))
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


def _as_model(value: str | Path | Model) -> Model:
    return value if isinstance(value, Model) else Model.load(value)


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


def _feeds(
    model: Model,
    inputs: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]] | None,
    samples: int,
    dims: Mapping[str, int] | None,
    input_shapes: Mapping[str, Sequence[int]] | None,
    seed: int,
    notes: list[str],
) -> list[dict[str, np.ndarray]]:
    signature = model.signature
    if inputs is None:
        feeds, plan = generated_feeds(
            model, samples, seed=seed, dims=dims, input_shapes=input_shapes
        )
        notes.append(f"generated inputs {plan.describe()}")
        notes += [f"chose {c}" for c in plan.choices]
        return feeds
    feeds = [dict(inputs)] if isinstance(inputs, Mapping) else [dict(f) for f in inputs]
    if not feeds:
        raise UsageError("inputs is empty", hint="give at least one set of feeds")
    for i, f in enumerate(feeds):
        try:
            signature.validate(f)
        except FeedError as e:
            where = f" (feed set {i})" if len(feeds) > 1 else ""
            raise FeedError(f"{model.name}: {e.message}{where}", hint=e.hint) from e
    return feeds
