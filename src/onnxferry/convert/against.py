"""`ferry compare MODEL SOURCE`: an ONNX model judged against the framework model it came from.

    report = compare_to_source("model.onnx", "train.py:make_model",
                               input_shapes={"image": (1, 3, 224, 224)})
    report.result.worst, report.result.divergence      # for torch: the first module that differs

The source is loaded by the same framework loaders ``convert`` uses, and its reference runner
runs on the same realistic feeds (two values per dynamic axis, the user's samples first).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FerryError
from ..model import Model
from ..parity import Parity, Tolerance
from ..report import Report
from ..runtime import OrtRunner, SessionConfig
from ..signature import Signature
from .dispatch import load_source, options_for
from .verdict import SourceJudge


def compare_to_source(
    model: str | Path | Model,
    source: Any,
    *,
    framework: str | None = None,
    inputs: Sequence[Mapping[str, np.ndarray]] | Mapping[str, np.ndarray] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    dynamic: Mapping[str, Mapping[int, str]] | None = None,
    provider: str = "cpu",
    tolerance: Tolerance | None = None,
    trust_pickle: bool = False,
    example_inputs: Any = None,
    graph_outputs: Sequence[str] = (),
    bindings: Mapping[str, bool | int | float] | None = None,
) -> Report[Parity]:
    """Parity of ONNX Runtime on ``model`` against ``source`` run in its own framework
    (``graph_outputs`` and ``bindings`` as ``convert`` takes them)."""
    onnx_model = model if isinstance(model, Model) else Model.load(model)
    options = options_for(
        input_shapes,
        inputs,
        dynamic,
        trust_pickle=trust_pickle,
        graph_outputs=graph_outputs,
        bindings=bindings,
    )
    loaded = load_source(source, options, framework=framework, example_inputs=example_inputs)
    tolerance = tolerance or loaded.tolerance or Tolerance()
    feeds = loaded.verification_feeds(options.sample_inputs, options.input_shapes)
    runner = OrtRunner(onnx_model, config=SessionConfig(provider=provider))
    judge = SourceJudge(loaded, feeds, tolerance)
    notes = [f"reference: {loaded.description}"]
    renames = _by_position(onnx_model.signature.output_names, loaded.reference.signature)
    if renames:
        notes.append(
            "outputs paired by position, their names all differ: "
            + ", ".join(f"{ours} = {theirs}" for ours, theirs in renames.items())
        )
    outputs = [{renames.get(k, k): v for k, v in runner.run(f).items()} for f in feeds]
    parity = judge(outputs, runner.name, None if renames else onnx_model)
    if not parity.ok and loaded.find_divergence is not None:
        with contextlib.suppress(FerryError):
            parity.divergence = loaded.find_divergence(onnx_model, feeds[0], tolerance)
        if parity.divergence is not None:
            notes.append(f"first divergence in {parity.divergence.node!r}")
    return Report("compare", parity, notes=notes)


def _by_position(ours: Sequence[str], reference: Signature) -> dict[str, str]:
    """The model's output names paired with the source's by position, when no name is shared
    and the counts agree (Keras names a layer by a per-process counter: a model built again
    in the same process answers ``dense_27`` where the export says ``dense_13``); else {}."""
    theirs = reference.output_names
    if len(ours) != len(theirs) or set(ours) & set(theirs):
        return {}
    return dict(zip(ours, theirs, strict=True))
