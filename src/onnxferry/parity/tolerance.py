"""Tolerance: how far apart two outputs may be, per output if need be.

    tolerance = Tolerance(atol=1e-4, rtol=1e-3, per_output={"logits": (1e-2, 1e-3)})
    tolerance.for_output("logits"), tolerance.for_output("probs")  # (0.01, 0.001), (0.0001, ...)
    Tolerance.partial(atol=1e-2)                   # the values given, the defaults for the rest
    tolerance.to_dict()                            # as a report shows it
    between_runtimes(Model.load("model.onnx"))     # float16's for a model with float16 weights

A float element passes when |cand - ref| <= atol + rtol * |ref| (``judge``); both values must
be finite and non-negative (UsageError).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from ..model import Model


@dataclass(frozen=True)
class Tolerance:
    """Absolute and relative tolerance, with per-output overrides ``{name: (atol, rtol)}``."""

    atol: float = 1e-4
    rtol: float = 1e-3
    per_output: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        pairs = [("default", (self.atol, self.rtol)), *self.per_output.items()]
        for name, (atol, rtol) in pairs:
            if not (atol >= 0 and rtol >= 0 and math.isfinite(atol) and math.isfinite(rtol)):
                raise UsageError(
                    f"tolerance for {name} must be finite and non-negative, "
                    f"got atol={atol}, rtol={rtol}"
                )

    @classmethod
    def partial(cls, atol: float | None = None, rtol: float | None = None) -> Tolerance | None:
        """The one place a partial tolerance meets the defaults: the values given, these
        defaults for the rest; None when neither is given (the verb's own default applies,
        e.g. a source framework's).

            Tolerance.partial(atol=1e-2)     # Tolerance(atol=0.01, rtol=0.001)
            Tolerance.partial()              # None
        """
        if atol is None and rtol is None:
            return None
        default = cls()
        return cls(
            atol=default.atol if atol is None else atol,
            rtol=default.rtol if rtol is None else rtol,
        )

    def for_output(self, name: str) -> tuple[float, float]:
        """(atol, rtol) for one output: its override, else the defaults."""
        atol, rtol = self.per_output.get(name, (self.atol, self.rtol))
        return float(atol), float(rtol)

    def to_dict(self) -> dict[str, Any]:
        return {
            "atol": self.atol,
            "rtol": self.rtol,
            "per_output": {
                name: {"atol": atol, "rtol": rtol}
                for name, (atol, rtol) in sorted(self.per_output.items())
            },
        }


FLOAT16 = (1e-2, 1e-2)
"""(atol, rtol) for outputs computed in float16: its step is 1e-3 of a value, and two
runtimes round after different ops (an fp16 .tflite, an IR compressed to fp16, a model
converted to float16 whole run by another runtime)."""


BFLOAT16 = (3e-2, 3e-2)
"""(atol, rtol) for outputs computed or returned in bfloat16: its step is 4e-3 to 8e-3 of a
value (8 significant bits), and two runtimes round after different ops."""


def between_runtimes(model: Model) -> Tolerance:
    """The default tolerance for ``model`` run by two runtimes: float16's (``FLOAT16``) for a
    model whose weights are mostly float16, bfloat16's (``BFLOAT16``) for one whose weights or
    outputs are bfloat16 (each runtime rounds after different ops, so they agree only to the
    type's step), else ``Tolerance()``."""
    kind = _low_precision(model)
    return Tolerance(*_STEPS[kind[0]]) if kind else Tolerance()


def low_precision_note(model: Model) -> str | None:
    """Why ``between_runtimes`` chose a low precision's tolerance for ``model``; None when it
    did not."""
    kind = _low_precision(model)
    return float16_weights_note(model.name, kind[1], kind[0]) if kind else None


def float16_weights_note(
    name: str, why: str = "weights are float16", precision: str = "float16"
) -> str:
    """The report's note for a model ``name`` judged at ``precision``'s tolerance (``why``)."""
    atol, rtol = _STEPS[precision]
    return (
        f"{name}'s {why}: verified at {precision}'s tolerance "
        f"(atol {atol}, rtol {rtol}), as two runtimes round it after different ops"
    )


_STEPS = {"float16": FLOAT16, "bfloat16": BFLOAT16}


def _low_precision(model: Model) -> tuple[str, str] | None:
    """(precision, why) where ``model`` computes in float16 or bfloat16, else None."""
    if model.weight_type == "FLOAT16":
        return "float16", "weights are float16"
    if model.weight_type == "BFLOAT16":
        return "bfloat16", "weights are bfloat16"
    if any(t.dtype.onnx_name == "BFLOAT16" for t in model.signature.outputs):
        return "bfloat16", "outputs are bfloat16"
    return None
