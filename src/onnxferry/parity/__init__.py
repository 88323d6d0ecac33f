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

An output that fails by no more than the reference's own numerical noise passes, with a note:
``compare_within_noise`` runs the reference on a second kernel set only then (LiteRT's
reference kernels; ONNX Runtime with no graph optimization, ``unoptimized_ort``) and
``excuse_source_noise`` judges against how far apart the two sets are.

The modules: ``tolerance`` (Tolerance), ``judge`` (compare_outputs, compare_runners,
compare_within_noise, judge_output), ``metrics`` (the float statistics) and ``results``
(OutputParity, Divergence, Parity). They share their working parts by public names; this
``__init__`` is the boundary.
"""

from __future__ import annotations

from .judge import (
    SecondOpinion,
    compare_outputs,
    compare_runners,
    compare_within_noise,
    excuse_source_noise,
    judge_output,
    unoptimized_ort,
)
from .results import Divergence, OutputParity, Parity
from .tolerance import Tolerance

__all__ = [
    "Divergence",
    "OutputParity",
    "Parity",
    "SecondOpinion",
    "Tolerance",
    "compare_outputs",
    "compare_runners",
    "compare_within_noise",
    "excuse_source_noise",
    "judge_output",
    "unoptimized_ort",
]
