"""The feed sets of the targets that run what they wrote against ONNX Runtime (mobile,
openvino, tflite): the user's (``--set inputs=FILE``), else generated at sizes that run.

    from onnxferry.runtime import OrtRunner
    result = Packaged("mobile", "model", "out/")
    opts = check_options(Options("mobile", {"samples": "2"}, CHECK_KEYS))
    feeds = check_feeds(Model.load("model.onnx"), opts["inputs"], opts["samples"], result)
    reference = [OrtRunner(Model.load("model.onnx")).run(f) for f in feeds]
    note_unfinite(reference, opts["inputs"], result)  # NaN in ONNX Runtime's outputs: a note
    second, steps = reference_noise(Model.load("model.onnx"), feeds)  # steps: {} here
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ..errors import FeedError
from ..model import Model
from .base import Options, Packaged

if TYPE_CHECKING:
    from ..parity import SecondOpinion

CHECK_KEYS = ("inputs", "samples")
"""Options of every target that checks what it wrote on feed sets (``check_feeds``)."""


def check_options(opts: Options) -> dict[str, Any]:
    """``inputs`` (a path, or None) and ``samples`` (3) from a target's options."""
    return {"inputs": opts.text("inputs", "") or None, "samples": opts.integer("samples", 3, low=1)}


def check_feeds(
    model: Model, inputs: str | None, samples: int, result: Packaged
) -> list[dict[str, Any]]:
    """The feed sets a target's parity check runs on: the user's (``--set inputs=FILE``: .npz,
    .npy, .pb or a test-data folder, checked against the model's inputs), else ``--set
    samples=N`` (3) made at sizes ONNX Runtime runs, with a note naming sizes chosen for open
    dims (a model used at other sizes may differ there: give them)."""
    from ..feeds import feed_sets

    try:
        feeds, plan = feed_sets(model, inputs, count=samples, where=f"--set inputs={inputs}")
    except FeedError as e:  # no inputs can be made (an input of unknown rank): say how to give them
        if inputs is not None or not all(s.is_array for s in model.signature.inputs):
            raise
        raise FeedError(e.message, hint="give inputs to check on: --set inputs=FILE") from e
    if plan is not None and plan.guessed:
        result.notes.append(
            f"checked at sizes chosen here for the open dims ({plan.describe()}); "
            "--set inputs=FILE checks at the sizes the model is used at"
        )
    return feeds


def note_unfinite(
    reference: Sequence[Mapping[str, Any]], inputs: str | None, result: Packaged
) -> None:
    """A note naming ONNX Runtime's float outputs that hold NaN or infinities on the check's
    feed sets: there the target is compared on values the model does not compute (SwiftF0's
    pitch is NaN for a random pitch range), and a parity failure is about NaNs."""
    bad = sorted(
        {
            name
            for outputs in reference
            for name, value in outputs.items()
            if isinstance(value, np.ndarray)
            and np.issubdtype(value.dtype, np.floating)
            and not np.isfinite(value).all()
        }
    )
    if not bad:
        return
    names = ", ".join(repr(name) for name in bad)
    where = "the inputs given" if inputs else "the generated inputs"
    hint = "" if inputs else "; --set inputs=FILE checks on inputs it computes numbers on"
    result.notes.append(
        f"ONNX Runtime's output {names} holds NaN or infinite values on {where}: the check "
        f"compares values the model does not compute there{hint}"
    )


class ReferenceNoise(NamedTuple):
    """What a converter target's parity check allows the reference (``reference_noise``)."""

    second: SecondOpinion
    """ONNX Runtime's second opinion on its own noise."""
    steps: dict[str, float]
    """Outputs on a quantization's grid, and its step: they pass a step apart."""


def reference_noise(model: Model, feeds: Sequence[Mapping[str, Any]]) -> ReferenceNoise:
    """The reference's noise in a converter target's parity check (OpenVINO, LiteRT).

    ``second``: ONNX Runtime, no graph optimization (``parity.unoptimized_ort``), on the form
    the converters are given or compute: QOperator nodes as QDQ (an output a step from ONNX
    Runtime's integer kernels), integer products as exact float ones (ONNX Runtime's u8s8
    kernels saturate on CPUs without VNNI, OpenVINO and LiteRT do not). ``steps``: the
    outputs a DequantizeLinear writes at one scale, in that QDQ form (``qdq.output_steps``).
    """
    from ..parity import unoptimized_ort
    from ..qdq import output_steps, with_float_products, with_qdq

    as_qdq = with_qdq(model)[0]
    second = unoptimized_ort(with_float_products(as_qdq)[0], feeds)
    return ReferenceNoise(second, output_steps(as_qdq.proto))
