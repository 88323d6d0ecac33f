"""`ferry test`: run a model on golden data and judge every set against its expected outputs.

    report = onnxferry.test("model.onnx", "model_dir/")   # test_data_set_N/*.pb or *.npz
    report = onnxferry.test("model_dir/")                 # golden data beside the model
    for case in report.result.cases:
        print(case.name, case.passed, case.parity.summary() if case.parity else "")

Each set's outputs are judged against its expected ones by ``parity.compare_outputs``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data import load_test_cases
from .errors import UsageError
from .feeds import checked_feeds
from .model import Model
from .parity import Parity, Tolerance, compare_outputs
from .report import Report, Table
from .runtime import OrtRunner, SessionConfig


@dataclass
class CaseResult:
    """One golden set: its parity against the expected outputs (None if it had none)."""

    name: str
    parity: Parity | None
    expected: dict[str, Any] | None = None
    produced: dict[str, Any] | None = None
    """The set's expected outputs and the model's, for a judge other than the tolerance (a
    promotion's accuracy budget); not in the report."""

    @property
    def passed(self) -> bool:
        return self.parity is None or self.parity.ok

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "checked_outputs": self.parity is not None,
            "parity": self.parity.to_dict() if self.parity else None,
        }


@dataclass
class GoldenResult:
    """Every golden set of one model (ReportBody)."""

    model: str
    data: str
    provider: str
    cases: list[CaseResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.passed for c in self.cases)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "data": self.data,
            "provider": self.provider,
            "sets": len(self.cases),
            "passed": sum(c.passed for c in self.cases),
            "cases": [c.to_dict() for c in self.cases],
        }

    def tables(self) -> list[Table]:
        rows = []
        for c in self.cases:
            detail = (
                "ran; no expected outputs"
                if c.parity is None
                else (c.parity.summary() if not c.parity.ok else "all outputs within tolerance")
            )
            rows.append(
                (
                    c.name,
                    "PASS" if c.passed else "FAIL",
                    c.parity.max_abs if c.parity else None,
                    c.parity.max_rel if c.parity else None,
                    detail,
                )
            )
        columns = ("set", "result", "max abs", "max rel", "detail")
        return [Table(f"test {self.model} on {self.data}", columns, rows)]


def test(
    model: str | Path | Model,
    data: str | Path | None = None,
    *,
    provider: str = "cpu",
    threads: int | None = None,
    tolerance: Tolerance | None = None,
) -> Report[GoldenResult]:
    """Run ``model`` on every golden set under ``data`` and compare with expected outputs.

        report = test("model_dir/")                  # model_dir/test_data_set_N beside it
        report = test("model.onnx", "golden/", tolerance=Tolerance(atol=1e-3))

    ``data`` defaults to the model's directory (the ONNX model zoo's layout).
    """
    model = model if isinstance(model, Model) else Model.load(model)
    if data is None:
        if model.path is None:
            raise UsageError(
                "this model has no file, so no golden data beside it",
                hint="give the golden data's directory or file",
            )
        data = model.path.parent
    tolerance = tolerance or Tolerance()
    cases = load_test_cases(data, model.signature)
    runner = OrtRunner(model, config=SessionConfig(provider=provider, threads=threads))
    result = GoldenResult(model=model.name, data=str(data), provider=runner.provider)
    for case in cases:
        (inputs,) = checked_feeds(case.inputs, model.signature, where=f"test data {case.name!r}")
        outputs = runner.run(inputs)
        if not case.outputs:
            result.cases.append(CaseResult(case.name, None))
            continue
        # Golden sets may hold a subset of the outputs: judge those, report missing ones.
        produced = {name: outputs[name] for name in case.outputs if name in outputs}
        parity = compare_outputs(
            [case.outputs],
            [produced],
            tolerance,
            reference_name=f"{case.name} expected",
            candidate_name=runner.name,
        )
        result.cases.append(CaseResult(case.name, parity, dict(case.outputs), produced))
    return Report("test", result)


test.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
