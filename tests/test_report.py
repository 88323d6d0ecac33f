"""Reports: saved as JSON and HTML through Report, and handed back typed by transforming verbs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onnxferry.convert import Conversion, convert
from onnxferry.optimize import ChainResult, Recipe, SearchResult, optimize
from onnxferry.report import Report, Table, format_value
from tests.helpers import mlp, save


class _Body:
    def __init__(self, name: str, ok: bool = True) -> None:
        self.name = name
        self.ok = ok

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "value": float("nan")}

    def tables(self) -> list[Table]:
        return [Table(f"table {self.name}", ("name",), [(self.name,)])]


def test_save_writes_the_json_and_save_html_the_page_with_its_sections(tmp_path: Path) -> None:
    report = Report("deploy", _Body("whole"), notes=["a <note>"])
    stage = Report("convert", _Body("stage", ok=False))
    assert report.save(tmp_path / "out" / "r.json") == tmp_path / "out" / "r.json"
    text = (tmp_path / "out" / "r.json").read_text()
    assert text == report.to_json() + "\n"
    assert json.loads(text)["result"] == {"name": "whole", "value": "nan"}
    report.save_html(tmp_path / "r.html", "title <x>", ["<svg>figure</svg>"], [stage])
    page = (tmp_path / "r.html").read_text()
    assert page == report.to_html("title <x>", ["<svg>figure</svg>"], [stage])
    assert "<title>title &lt;x&gt;</title>" in page and "a &lt;note&gt;" in page
    assert page.index("table whole") < page.index("convert: <span class='FAILED'>")
    assert page.index("table stage") < page.index("<figure><svg>figure</svg></figure>")


def test_convert_and_optimize_hand_back_their_report_typed(tmp_path: Path) -> None:
    source = save(mlp(), tmp_path / "src.onnx")
    model = convert(source, tmp_path / "model.onnx", framework="onnx")
    report = model.last_report(Conversion)
    assert isinstance(report.result, Conversion) and report.result.chosen is not None
    assert model.provenance == [report]
    with pytest.raises(LookupError, match="no ChainResult or SearchResult report"):
        model.last_report(ChainResult, SearchResult)
    fast = optimize(model, tmp_path / "fast.onnx", recipe=Recipe.of(["fold"]))
    optimized = fast.last_report(ChainResult, SearchResult)
    assert isinstance(optimized.result, ChainResult)
    assert fast.last_report(Conversion) is report
    assert optimized.verb == "optimize" and [s.label for s in optimized.result.steps] == ["fold"]
    assert fast.provenance == [report, optimized]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.5, "0.5"),
        (12345.6, "12,346"),
        (2.5e-5, "2.500e-05"),
        (2.554e300, "2.554e+300"),  # a max_rel over an output of zeros: not 300 digits
        (None, "-"),
        (True, "yes"),
    ],
)
def test_cells_stay_short(value: object, text: str) -> None:
    assert format_value(value) == text
