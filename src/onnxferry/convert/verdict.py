"""The verdict on an exported model: its outputs against the source's on the same feeds, and,
where they differ, against the source's own numerical noise.

    judge = SourceJudge(source, feeds, Tolerance())  # runs the source once per feed set
    parity = judge([runner.run(f) for f in feeds], "tf2onnx")   # a Parity

A source that can run on a second kernel set (``Source.second_reference``: TFLite's reference
kernels beside its XNNPACK ones) gives a failing candidate one more chance: the outputs that
are no further from the second set than the source's own first set is pass, with a note that
says by how much (``parity.excuse_source_noise``). The second set runs once, when first needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import one_line
from ..parity import Parity, Tolerance, compare_outputs, excuse_source_noise
from .base import Source

Outputs = list[dict[str, np.ndarray]]


@dataclass
class SourceJudge:
    """Judges candidates' outputs against ``source`` on ``feeds``."""

    source: Source
    feeds: Sequence[Mapping[str, np.ndarray]]
    tolerance: Tolerance
    references: Outputs = field(init=False)
    _second: tuple[Outputs, str] | str | None = field(init=False, default=None)
    """The second kernel set's outputs and name, or why it could not run."""

    def __post_init__(self) -> None:
        self.references = [self.source.reference.run(f) for f in self.feeds]

    def __call__(self, outputs: Sequence[Mapping[str, np.ndarray]], candidate: str) -> Parity:
        parity = compare_outputs(
            self.references,
            outputs,
            self.tolerance,
            reference_name=self.source.reference.name,
            candidate_name=candidate,
        )
        if parity.ok or parity.problems or self.source.second_reference is None:
            return parity
        second = self._second_outputs()
        if isinstance(second, str):
            parity.notes.append(second)
            return parity
        seconds, name = second
        spread = compare_outputs(
            self.references,
            seconds,
            self.tolerance,
            reference_name=parity.reference,
            candidate_name=name,
        )
        to_second = compare_outputs(seconds, outputs, self.tolerance, reference_name=name)
        excuse_source_noise(parity, spread, to_second)
        return parity

    def _second_outputs(self) -> tuple[Outputs, str] | str:
        if self._second is None:
            make = self.source.second_reference
            assert make is not None
            try:
                runner = make()
                self._second = [runner.run(f) for f in self.feeds], runner.name
            except Exception as e:  # a kernel set without an op: no second opinion, said once
                self._second = f"the source's second kernel set could not run ({one_line(e)})"
        return self._second
