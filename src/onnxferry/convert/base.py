"""What every source framework hands to the converter: a reference runner and exporters.

    source = load_torch(module, options)           # one loader per framework
    source.reference.run(feeds)                    # the original model, as a Runner
    for candidate in source.candidates:            # each exporter that may work
        candidate.export(Path("out.onnx"))         # writes an ONNX file (or raises)

The dispatcher (``onnxferry.convert``) verifies every candidate against ``reference`` on
several input shapes and keeps the one that passes (the faster one when several do).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import FerryError, VerificationError
from ..feeds import ColumnScale, Vocabulary, verification_feeds

if TYPE_CHECKING:
    from ..model import Model
    from ..parity import Divergence, Tolerance
    from ..report import Report
    from ..runtime import Runner

FRAMEWORKS = ("torch", "keras", "tf", "tflite", "sklearn", "onnx")
"""The source frameworks ``convert`` and ``compare_to_source`` understand."""

DEFAULT_OPSET = 17
"""The ai.onnx opset written when the user names none (capped at what ONNX Runtime loads):
TensorFlow's converters, and an ONNX model older than ONNX Runtime runs."""

DEFAULT_DYNAMIC = "batch"
"""Name given to dim 0 of every input when the user names no dynamic axes."""


class ConversionError(FerryError):
    """An exporter could not produce an ONNX model (exit 2): names the operator and the
    framework layer where it can, and suggests a fix (another opset, the other exporter, a
    custom op)."""


class ParityFailure(VerificationError):
    """Every exported model differs from the source beyond tolerance (exit 1); ``report``
    holds the figures for each exporter."""

    def __init__(self, message: str, *, hint: str | None = None, report: Report[Any]) -> None:
        super().__init__(message, hint=hint)
        self.report = report


@dataclass(frozen=True)
class ConvertOptions:
    """The user's choices, shared by every framework loader.

    ``input_shapes``: concrete shapes per input name (``--input-shape x=1x3x224x224``).
    ``sample_inputs``: feed sets given by the user (``--inputs samples.npz``).
    ``dynamic_axes``: per input, axis -> name (``--dynamic x:0=batch,1=seq``); None means
    dim 0 of every input is dynamic and named "batch"; an empty mapping means all static.
    ``opset``: the ai.onnx opset to export (None: the exporter's default, capped at what the
    installed ONNX Runtime loads). ``trust_pickle``: the user confirmed that loading a pickle
    (which runs code) is fine. ``custom_export``: a Python file of translations for the
    model's custom layers (torch: ``convert.torch.custom``). ``graph_outputs``: a TensorFlow
    graph's tensors (``prob`` or ``split:1``) to convert as its outputs, instead of its ends
    (``--graph-outputs``). ``bindings``: a TensorFlow graph's placeholders fixed to a value,
    no longer inputs (``--bind is_training=false``).
    """

    input_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    sample_inputs: Sequence[Mapping[str, np.ndarray]] = ()
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None
    opset: int | None = None
    trust_pickle: bool = False
    custom_export: Path | None = None
    graph_outputs: tuple[str, ...] = ()
    bindings: Mapping[str, bool | int | float] = field(default_factory=dict)

    def axes_for(self, input_name: str, rank: int) -> dict[int, str]:
        """The dynamic axes of one input: the user's, or {0: "batch"} by default."""
        if self.dynamic_axes is None:
            return {0: DEFAULT_DYNAMIC} if rank > 0 else {}
        return {int(k): v for k, v in self.dynamic_axes.get(input_name, {}).items()}


@dataclass
class Candidate:
    """One way to export the source: ``export(path)`` writes an ONNX file or raises
    ConversionError (or any exception, which the dispatcher reports as the exporter's)."""

    exporter: str  # e.g. "torch.onnx (dynamo)", "torch.onnx (torchscript)", "tf2onnx"
    export: Callable[[Path], None]
    caveats: list[str] = field(default_factory=list)
    """Filled by ``export``: where it took a value the source computes from its inputs as
    fixed ("a Python boolean at torchdiffeq/_impl/solvers.py:31": a trace's branch)."""
    fallback: bool = False
    """Tried only when no candidate before it passed: one that differs from them in little
    but its cost (Keras's own export is tf2onnx again, on Keras's trace)."""


@dataclass
class Source:
    """A loaded source model, ready to convert and verify.

        ``reference`` runs the original; its ``signature`` names inputs and outputs exactly as the
        exported ONNX model must (dynamic dims as symbol names). ``value_ranges`` bound integer
        inputs, e.g. {"input_ids": (0, vocab_size)}; inputs named like attention masks get
        realistic padding automatically; ``vocabularies`` give string inputs their words (a text
    vectorizer's). ``tolerance`` overrides the default when the framework
        computes differently (float64 estimators). ``find_divergence`` (optional) names the first
        framework layer whose output differs from its ONNX counterpart. ``second_reference``
        (optional) measures the source's own noise.
    """

    framework: str  # "torch", "keras", "tf", "tflite", "sklearn", "onnx"
    description: str
    reference: Runner
    candidates: list[Candidate]
    value_ranges: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    vocabularies: Mapping[str, Vocabulary] = field(default_factory=dict)
    column_scales: Mapping[str, ColumnScale] = field(default_factory=dict)
    """Where a table model's float features lie (a scaler's statistics, the trees' split
    thresholds): generated rows are drawn there, not from N(0, 1)."""
    tolerance: Tolerance | None = None
    find_divergence: (
        Callable[[Model, Mapping[str, np.ndarray], Tolerance], Divergence | None] | None
    ) = None
    second_reference: Callable[[], Runner] | None = None
    """The original on the framework's other kernels (TFLite's reference kernels), made and
    run only when a candidate fails: how far it is from ``reference`` is the source's own
    numerical noise, and a candidate within it passes (``parity.excuse_source_noise``)."""
    details: dict[str, Any] = field(default_factory=dict)  # extra facts for the report
    notes: list[str] = field(default_factory=list)
    """What the report must tell the user about the source (a stream's states as inputs)."""
    samples: list[dict[str, np.ndarray]] = field(default_factory=list)
    """Feed sets the source brought with it (a factory's example inputs, by input name)."""

    def verification_feeds(
        self,
        samples: Sequence[Mapping[str, np.ndarray]] = (),
        input_shapes: Mapping[str, Sequence[int]] | None = None,
    ) -> list[dict[str, np.ndarray]]:
        """The user's samples and the source's own, then generated sets that vary the
        reference's dynamic dims (from the sizes ``input_shapes`` or the samples give them),
        with values inside ``value_ranges`` and ``vocabularies``."""
        return verification_feeds(
            self.reference.signature,
            [*samples, *self.samples],
            self.value_ranges,
            input_shapes=input_shapes,
            vocabularies=self.vocabularies,
            column_scales=self.column_scales,
        )
