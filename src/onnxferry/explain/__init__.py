"""Attributions for an ONNX model's predictions: SHAP, LIME and occlusion over batched runs.

    from onnxferry.explain import write_explanation

    explanation = onnxferry.explain("model.onnx", {"x": x}, method="kernelshap", background=bg)
    explanation.attributions            # shaped like x: each feature's share of the target
    explanation.ranking(0)[:3]          # input 0's most important features
    files = write_explanation(explanation, "explain/")   # PNG / HTML by kind, JSON, report.html

``method`` is one of ``METHODS``: ``kernelshap`` and ``permutation`` (shap), ``lime`` (lime's
tabular, image or text explainer), ``occlusion`` (a sliding window), ``integrated-gradients``
(Captum, on the graph as a torch module checked against ONNX Runtime: ``gradients``). The
input's kind (image, tabular, tokens, signal, text, volume) comes from the signature (``kind=``
overrides it); images, signals and tokens are explained over superpixels / blocks / positions
hidden by a baseline (see ``masking``), texts (a string per row) word by word, a hidden
word dropped (``text``), and a table model (one ``[batch, 1]`` input per column, as skl2onnx
converts a DataFrame pipeline) column by column, categories among them (``table``).

Every perturbation an explainer asks for is evaluated through one ONNX Runtime session in
batches (``evaluate``), not one ``session.run`` per sample; ``max_evals`` (rows evaluated) and
``deadline`` (seconds) bound the cost: each method sizes its samples to the budget, and a
deadline that passes after some inputs are explained returns those (``complete`` is False).
A caller that holds a session already (a server) passes ``session=`` or an ``OrtRunner``.

The parts: ``kinds`` (what an input is), ``inputs`` (session, feeds, background), ``evaluate``
(the batched model function and its budget), ``gradients`` (the same function through the graph
as a torch module), ``masking`` (superpixels, baselines), ``methods``, ``result``
(``Explanation``), ``render`` (the files). Importing this package loads ``result`` only; the
rest loads when ``explain`` runs or a name below is asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .result import Explanation

if TYPE_CHECKING:
    from ..model import Model
    from ..runtime import OrtRunner
    from .evaluate import Budget, BudgetExceeded, Decode, Progress, Session
    from .inputs import Arrays
    from .kinds import KINDS
    from .methods import METHODS, MethodUnavailable
    from .render import load_vocabulary, write_explanation

__all__ = [
    "KINDS",
    "METHODS",
    "Budget",
    "BudgetExceeded",
    "Explanation",
    "MethodUnavailable",
    "Progress",
    "Session",
    "explain",
    "load_vocabulary",
    "write_explanation",
]

_LAZY = {
    "Budget": "evaluate",
    "BudgetExceeded": "evaluate",
    "Progress": "evaluate",
    "Session": "evaluate",
    "KINDS": "kinds",
    "METHODS": "methods",
    "MethodUnavailable": "methods",
    "load_vocabulary": "render",
    "write_explanation": "render",
}
"""Exported names and the module that holds each, loaded when first asked for."""


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def explain(
    model: Model | str | Path | OrtRunner,
    inputs: Arrays,
    method: str = "kernelshap",
    *,
    input_name: str | None = None,
    target: int | str | None = None,
    background: Arrays | None = None,
    max_evals: int | None = None,
    deadline: float | None = None,
    kind: str | None = None,
    batch_size: int | None = None,
    samples: int | None = None,
    segments: int = 50,
    window: int | None = None,
    seed: int = 0,
    batch_axis: bool | None = None,
    session: Session | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> Explanation:
    """Attribute each row of one input to the target's value.

    ``inputs``: arrays by input name (every model input), one array for the explained input, or
    an .npz. ``input_name``: the input explained (default: the first). ``target``: a class
    index of the first output, an output's name, or ``OUTPUT:INDEX`` (default: the first
    output's argmax per row, or its one value). ``background``: rows like the inputs (SHAP's
    background, LIME's training data, the baseline's mean; default for tabular: the inputs
    themselves when there are several). ``samples``: the method's sample count (kernelshap
    nsamples, permutation max_evals, LIME num_samples, integrated gradients' steps).
    ``segments``: superpixels per image, blocks per signal. ``window``: occlusion's window in
    pixels (elements along each axis of a signal, neighbouring tokens; tokens are hidden one
    at a time without it). ``batch_axis``: whether the model's input
    has a batch axis (default: told from its shape). ``session``: an InferenceSession already made
    for ``model``, or anything with its ``run(output_names, feeds, run_options)`` (``Session``).

    Raises UsageError (an unknown method, input, kind or target), DataError / FeedError
    (inputs that do not fit the model), BudgetExceeded (not one input fits ``max_evals`` or
    ``deadline``), MethodUnavailable (integrated-gradients on a graph without a faithful
    torch translation, or on ids or texts), NotFinite (the target's value is NaN or infinite
    on rows the explainer made).
    """
    from ..errors import UsageError
    from ..feeds import index_ranges
    from ..runtime import check_seed
    from .evaluate import (
        Budget,
        BudgetExceeded,
        Evaluator,
        NotFinite,
        resolve_targets,
        unfit_targets,
    )
    from .inputs import background_of, feeds_of, input_name_of, open_session, shap_background
    from .kinds import plan_layout
    from .masking import baseline, groups_for, spatial_labels
    from .methods import METHODS, MethodUnavailable, Task, require
    from .table import table_columns, table_rows
    from .text import text_positions

    if method not in METHODS:
        raise UsageError(f"unknown method {method!r}", hint=f"use one of {', '.join(METHODS)}")
    check_seed(seed)
    loaded, session = open_session(model, session)
    signature = loaded.signature
    name = input_name_of(signature, input_name)
    feeds = feeds_of(inputs, signature, name)
    spec = signature.input(name)
    notes: list[str] = []
    words, table = None, None
    decode: Decode | None = None
    categorical: tuple[int, ...] = ()
    columns = table_columns(signature) if input_name is None and kind in (None, "tabular") else None
    if columns is not None:
        table, layout, rows, data = table_rows(loaded, columns, feeds, background, notes)
        decode, feeds = table.decode, {}
        if method == "integrated-gradients":
            raise MethodUnavailable(
                "integrated-gradients follows a gradient through one float input; a table of "
                f"{len(columns)} inputs has none to follow",
                hint="use kernelshap, permutation, lime or occlusion",
            )
    else:
        ids = name in index_ranges(loaded.proto, signature)
        if batch_axis is None and (name, 0) in signature.indexed_axes():
            batch_axis = False  # a graph's nodes, which its edges number: one sample
        row_axis = _row_axis(loaded, name, batch_axis)
        given = np.moveaxis(np.asarray(feeds[name]), row_axis, 0) if row_axis else feeds[name]
        layout, rows = plan_layout(spec.axis_first(row_axis), given, kind, batch_axis, ids)
        layout = replace(layout, row_axis=row_axis)
        if row_axis and method == "integrated-gradients":
            raise MethodUnavailable(
                f"integrated-gradients takes rows along an input's first axis; {name!r} holds "
                f"them along axis {row_axis}",
                hint="use kernelshap, permutation, lime or occlusion",
            )
        if layout.kind == "text":
            words, decode = text_positions(layout, rows, background)
            layout, rows = replace(layout, sample_shape=words.ids.shape[1:]), words.ids
            notes.append("texts explained word by word: a hidden word is dropped from the text")
        data = background_of(background, spec, layout, rows, notes)
        if spec.dtype.kind == "bool":
            rows, data, decode, categorical = _flags(rows, data, method, notes)
    require(method, layout.kind)
    budget = Budget(max_evals, deadline)
    evaluator = Evaluator(
        session,
        signature,
        name,
        layout,
        {k: v for k, v in feeds.items() if k != name},
        len(rows),
        batch_size=batch_size,
        budget=budget,
        progress=progress,
        model_name=loaded.name,
        decode=decode,
    )
    unfit = unfit_targets(loaded.proto)
    targets, scores = resolve_targets(evaluator, rows, signature, target, unfit)
    if dependent := evaluator.probe_rows(rows[0], targets[0].output):
        notes.append(dependent)
    gradients = None
    if method == "integrated-gradients":
        from .gradients import GradientScorer

        gradients = GradientScorer.build(loaded, evaluator, rows)
        notes.append(gradients.note)
    shap_data = shap_background(data, method, seed, notes)
    values, bases, labels = [], [], []
    for i, sample in enumerate(rows):
        evaluator.input_index = i
        left = len(rows) - i
        groups = groups_for(sample, layout, segments, method)
        if i == 0 and groups is not None and layout.kind in ("image", "signal", "volume"):
            how = {"slic": "SLIC superpixels", "grid": "square patches"}.get(groups.method)
            notes.insert(0, f"{layout.kind}s explained over {how or 'blocks'}: {groups.count}")
        task = Task(
            sample=sample,
            layout=layout,
            score=evaluator.scorer(i, targets[i]),
            baseline=(
                table.baseline(baseline(layout, sample, data), data)
                if table is not None
                else baseline(layout, sample, data)
            ),
            background=shap_data,
            groups=groups,
            evals=evaluator.share(left),
            samples=samples,
            batch_size=evaluator.batch_size,
            seed=seed,
            window=window,
            plan=evaluator.planner(left),
            gradient=gradients.function(i, targets[i]) if gradients is not None else None,
            embed=gradients.embedder(i) if gradients is not None else None,
            categorical=table.categorical if table is not None else categorical,
        )
        try:
            attribution = METHODS[method](task)
        except BudgetExceeded as e:
            if i == 0:
                raise
            notes.append(f"stopped after {i} of {len(rows)} inputs: {e}")
            break
        explained = np.append(attribution.values, attribution.base)
        if not np.isfinite(explained).all():
            by = f"the explanation by {method}"
            raise NotFinite(by, explained, f"values of input {i} (attributions and base value)")
        values.append(attribution.values)
        bases.append(attribution.base)
        notes.extend(n for n in attribution.notes if n not in notes)
        if groups is not None and layout.kind == "image":
            labels.append(spatial_labels(groups, layout))
    done = len(values)
    return Explanation(
        model=loaded.name,
        input_name=", ".join(columns) if columns is not None else name,
        method=method,
        layout=layout,
        inputs=rows[:done],
        attributions=np.stack(values).astype(np.float64),
        base_values=np.asarray(bases, np.float64),
        scores=scores[:done],
        targets=[t.label for t in targets[:done]],
        evaluations=evaluator.evaluations,
        session_runs=evaluator.runs,
        seconds=evaluator.elapsed(),
        notes=notes,
        segments=np.stack(labels) if labels else None,
        requested=len(rows),
        words=words.pieces if words is not None else None,
        table=table,
    )


def _flags(
    rows: np.ndarray, data: np.ndarray | None, method: str, notes: list[str]
) -> tuple[np.ndarray, np.ndarray | None, Decode, tuple[int, ...]]:
    """A boolean input's rows as the explainers see them: 0.0 / 1.0 features, each a category
    (for LIME), perturbed values read back as True from 0.5 up, so a hidden flag takes the
    background's most common value. (rows, background, decode, categorical columns)."""
    from .methods import MethodUnavailable

    if method == "integrated-gradients":
        raise MethodUnavailable(
            "integrated-gradients follows a gradient through a float input; a boolean input "
            "has none",
            hint="use kernelshap, permutation, lime or occlusion",
        )
    notes.append(
        "flags explained as features: a hidden flag takes the background's most common value"
    )

    def decode(values: np.ndarray) -> np.ndarray:
        return np.asarray(values) >= 0.5

    floats = None if data is None else data.astype(np.float64)
    return rows.astype(np.float64), floats, decode, tuple(range(rows[0].size))


def _row_axis(model: Model, name: str, batch_axis: bool | None) -> int:
    """The axis the model takes ``name``'s rows along (``Signature.row_axes``: a time-major
    ``x[seq_len, batch_size, 8]`` takes them along 1); UsageError for a time-major input that
    names no batch dim (its "rows" would be time steps, each run a sequence of one)."""
    from ..graphs import time_axis_error, time_major_inputs

    if batch_axis is False:
        return 0
    axis = model.signature.row_axes().get(name) or 0
    if axis == 0 and name in time_major_inputs(model.proto):
        raise time_axis_error(model.name, name)
    return axis
