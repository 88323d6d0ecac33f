"""`ferry inspect`: what a model is — signature, opsets, operators, parameters, size, metadata.

    report = onnxferry.inspect("model.onnx")
    report.result.summary["parameter_count"]
    print(report.to_text())

Inspecting reads the model only: nothing runs it (``ferry check`` does). The text tables
shorten a long metadata value to its start and its size (PaddleOCR keeps its whole character
dictionary there, thousands of lines); the JSON holds every value whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import one_line
from .model import DEFAULT_MAX_SIZE, Model
from .report import Report, Table, human_size


@dataclass
class ModelInfo:
    """The facts about one model (ReportBody); ``summary`` has Model.summary()'s keys."""

    summary: dict[str, Any]

    @property
    def ok(self) -> bool:
        return True

    def to_dict(self) -> dict[str, Any]:
        return dict(self.summary)

    def tables(self) -> list[Table]:
        s = self.summary
        opsets = ", ".join(f"{d} {v}" for d, v in s["opset_imports"].items())
        facts = [
            ("path", s["path"]),
            ("sha256", s["digest"]),
            ("size", f"{human_size(s['size_bytes'])} ({s['size_bytes']:,} B)"),
            ("external data", ", ".join(s["external_data_files"]) or "none"),
            ("IR version", s["ir_version"]),
            ("opsets", opsets),
            ("producer", s["producer"] or "-"),
            ("parameters", f"{s['parameter_count']:,}"),
            ("nodes", s["node_count"]),
        ]
        facts.extend(
            (f"{k['index']} indexes", f"{k['data']}'s axis {k['axis']} (its values are rows there)")
            for k in s["signature"].get("links", [])
        )
        facts.extend((f"metadata {k}", _short(v)) for k, v in s["metadata_props"].items())
        io_rows = [
            (kind, t["name"], t["dtype"], _shape_text(t["shape"]))
            for kind in ("inputs", "outputs")
            for t in s["signature"][kind]
        ]
        return [
            Table(f"model {s['name']}", ("field", "value"), facts),
            Table("signature", ("kind", "name", "dtype", "shape"), io_rows),
            Table("operators", ("op", "count"), list(s["ops"].items())),
        ]


def inspect(path: str | Path | Model, *, max_size: int = DEFAULT_MAX_SIZE) -> Report[ModelInfo]:
    """Load ``path`` safely and describe it."""
    model = path if isinstance(path, Model) else Model.load(path, max_size=max_size)
    return Report("inspect", ModelInfo(model.summary()))


_METADATA_SHOWN = 80


def _short(value: Any) -> str:
    """A metadata value on one line: whole when short, else its start and its size."""
    text = str(value)
    if len(text) <= _METADATA_SHOWN and "\n" not in text:
        return text
    lines = len(text.splitlines())
    size = (
        f"{lines:,} lines, {len(text):,} characters" if lines > 1 else f"{len(text):,} characters"
    )
    return f"{one_line(text, _METADATA_SHOWN, period=False)} ({size})"


def _shape_text(shape: list[Any] | None) -> str:
    if shape is None:
        return "?"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
