"""The verdict on an exported model: its outputs against the source's on the same feeds, and,
where they differ, against the source's own numerical noise.

    judge = SourceJudge(source, feeds, Tolerance())  # runs the source once per feed set
    parity = judge([runner.run(f) for f in feeds], "tf2onnx")   # a Parity

A source that can run on a second kernel set (``Source.second_reference``: TFLite's reference
kernels beside its XNNPACK ones), and the candidate on ONNX Runtime with no graph
optimization, give a failing candidate one more chance: the outputs whose nearest pair of runs
is as close as one side's own two runs are pass, with a note that says by how much
(``parity.compare_within_noise``). The source's second set runs once, when first needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import FerryError, InputError, one_line
from ..feeds import describe_shapes, drawn_rows
from ..model import Model
from ..parity import Parity, Tolerance, compare_within_noise, unoptimized_ort
from .base import Source

Outputs = list[dict[str, np.ndarray]]


@dataclass
class SourceJudge:
    """Judges candidates' outputs against ``source`` on ``feeds``."""

    source: Source
    feeds: Sequence[Mapping[str, np.ndarray]]
    tolerance: Tolerance
    references: Outputs = field(init=False)
    _second: tuple[Outputs, str] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.references = []
        for feeds in self.feeds:
            self.references.append(self._reference(feeds, self.feeds[0]))

    def _reference(
        self, feeds: Mapping[str, np.ndarray], first: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """The source's outputs on one feed set; InputError (one line, exit 2) when the
        source itself cannot run on it (a CNN given an image smaller than its receptive
        field), or runs on ``first`` (run before) but not on these sizes of its open dims
        (a TFLite model declaring ``[-1, 16000]`` that reshapes to a fixed ``[98, 64]``)."""
        name = self.source.reference.name
        try:
            return self.source.reference.run(feeds)
        except Exception as e:
            shapes = describe_shapes({k: np.shape(v) for k, v in feeds.items()})
            said = e.message if isinstance(e, FerryError) else one_line(e, line="first", named=True)
            ran = {k: np.shape(v) for k, v in first.items()}
            if feeds is not first and self._runs(drawn_rows([first], dict(feeds))):
                raise InputError(
                    f"the source model ({name}) fails on the values generated at {shapes}, "
                    f"and runs at those sizes on rows of {describe_shapes(ran)}: {said}",
                    hint="give rows it takes (samples of your data) with --inputs FILE.npz",
                ) from e
            if feeds is not first and ran != {k: np.shape(v) for k, v in feeds.items()}:
                pins = " ".join(
                    f"--input-shape {k}={'x'.join(map(str, v))}" for k, v in ran.items() if v
                )
                raise InputError(
                    f"the source model ({name}) runs on {describe_shapes(ran)} but fails on "
                    f"{shapes}, so the dims it leaves open are not all free: {said}",
                    hint=f"convert it at the sizes it runs with --dynamic static {pins}",
                ) from e
            if isinstance(e, FerryError):
                raise
            raise InputError(
                f"the source model ({name}) fails on {shapes}: {said}",
                hint="give the sizes it takes with --input-shape NAME=1x..., or rows it runs "
                "on with --inputs",
            ) from e

    def _runs(self, feeds: Mapping[str, np.ndarray]) -> bool:
        """Whether the source runs on ``feeds``."""
        try:
            self.source.reference.run(feeds)
        except Exception:  # any failure: what the first run raised is the one reported
            return False
        return True

    def __call__(
        self,
        outputs: Sequence[Mapping[str, np.ndarray]],
        candidate: str,
        model: Model | None = None,
    ) -> Parity:
        """``outputs`` of the exported ``candidate``; ``model``, when given, is run again
        with no graph optimization for ONNX Runtime's own noise should they differ."""
        return compare_within_noise(
            self.references,
            outputs,
            self.tolerance,
            second=self._second_outputs if self.source.second_reference else None,
            candidate_second=None if model is None else unoptimized_ort(model, self.feeds),
            reference_name=self.source.reference.name,
            candidate_name=candidate,
        )

    def _second_outputs(self) -> tuple[Outputs, str]:
        """The second kernel set's outputs and name, run once for every candidate."""
        if self._second is None:
            assert self.source.second_reference is not None
            runner = self.source.second_reference()
            self._second = [runner.run(f) for f in self.feeds], runner.name
        return self._second
