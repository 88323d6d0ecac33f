"""Report: what a judging verb found, as stable JSON and as readable text.

    report = onnxferry.compare("a.onnx", "b.onnx")
    report.ok, report.exit_code
    print(report.to_text())
    report.save("build/compare.json")      # atomic write
    report.save_html("build/compare.html")  # one self-contained page
    report.write("build/compare.html")     # either one, by the suffix (what --report does)
    report.to_dict()["result"]             # stable keys, see each result's to_dict()

Every result type (Parity, CheckResult, ...) implements ``ReportBody``: ``to_dict()`` for
JSON and ``tables()`` for text; one with plots also has ``figures()`` (``Illustrated``),
inline SVG drawn under its tables in the HTML page. Non-finite floats become the strings
"nan", "inf", "-inf" so the JSON stays valid.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

import numpy as np

from ._version import __version__
from .atomic import write_text_atomic
from .errors import EXIT_OK, EXIT_VERIFICATION_FAILED

SCHEMA = "onnxferry.report/1"


@dataclass(frozen=True)
class Table:
    """A titled table: column names and rows of plain values."""

    title: str
    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]


class ReportBody(Protocol):
    """What a verb's result offers to its report."""

    @property
    def ok(self) -> bool: ...

    def to_dict(self) -> dict[str, Any]: ...

    def tables(self) -> list[Table]: ...


@runtime_checkable
class Illustrated(Protocol):
    """A report body with plots: ``figures()`` gives inline SVG (``plots`` makes them)."""

    def figures(self) -> list[str]: ...


T = TypeVar("T", bound=ReportBody)

HTML_SUFFIXES = (".html", ".htm")


@dataclass
class Report(Generic[T]):
    """The outcome of one verb: ``result`` is the typed finding (e.g. a Parity)."""

    verb: str
    result: T
    notes: list[str] = field(default_factory=list)
    created: str = field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    )

    @property
    def ok(self) -> bool:
        return self.result.ok

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.ok else EXIT_VERIFICATION_FAILED

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "verb": self.verb,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "onnxferry_version": __version__,
            "created": self.created,
            "notes": list(self.notes),
            "result": jsonable(self.result.to_dict()),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def tables(self) -> list[Table]:
        return self.result.tables()

    def to_text(self) -> str:
        parts = [render_table(t) for t in self.tables()]
        parts.extend(f"note: {n}" for n in self.notes)
        parts.append(f"{self.verb}: {'ok' if self.ok else 'FAILED'}")
        return "\n\n".join(parts)

    def save(self, path: str | Path) -> Path:
        """Write the JSON report atomically (temp file in the same directory, then rename)."""
        return write_text_atomic(path, self.to_json() + "\n")

    def to_html(
        self,
        title: str | None = None,
        figures: Sequence[str] = (),
        sections: Sequence[Report[Any]] = (),
    ) -> str:
        """A self-contained HTML page: the tables, the notes, then each of ``sections`` (e.g. a
        deploy's stages) the same way, and inline SVG ``figures``."""
        return render_html([self, *sections], title or f"onnxferry {self.verb}", figures)

    def save_html(
        self,
        path: str | Path,
        title: str | None = None,
        figures: Sequence[str] = (),
        sections: Sequence[Report[Any]] = (),
    ) -> Path:
        """Write ``to_html`` atomically, like ``save``."""
        return write_text_atomic(path, self.to_html(title, figures, sections))

    def write(self, path: str | Path) -> Path:
        """``save_html`` for a path ending in .html (or .htm), else ``save`` (JSON)."""
        if Path(path).suffix.lower() in HTML_SUFFIXES:
            return self.save_html(path)
        return self.save(path)


def jsonable(value: Any) -> Any:
    """Plain JSON types for numpy scalars/arrays, paths, tuples and non-finite floats."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, Path):
        return str(value)
    return value


def format_value(value: Any) -> str:
    """Short text for a table cell: 4 significant digits for floats (thousands separated up
    to a billion, an exponent past it and below 1e-3), "-" for None."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v) or math.isinf(v):
            return str(v)
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e9):
            return f"{v:.3e}"
        if abs(v) >= 1e4:
            return f"{v:,.0f}"
        return f"{v:.4g}"
    return str(value)


def render_table(table: Table) -> str:
    """A plain-text table (the CLI draws the same tables with rich)."""
    cells = [[format_value(v) for v in row] for row in table.rows]
    widths = [len(c) for c in table.columns]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=False)]
    lines = [table.title]
    lines.append("  ".join(c.ljust(w) for c, w in zip(table.columns, widths, strict=True)))
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) for row in cells)
    return "\n".join(lines)


def human_size(n: int) -> str:
    """Bytes in binary units: "512 B", "3.2 MiB"."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def render_html(reports: Sequence[Report[Any]], title: str, figures: Sequence[str] = ()) -> str:
    """One self-contained page (no external assets) for several reports, e.g. a deploy's
    stages, each with its own figures if its result is ``Illustrated``; ``figures`` are more
    inline SVG documents, at the end."""
    import html

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for report in reports:
        verdict = "ok" if report.ok else "FAILED"
        parts.append(
            f"<h2>{html.escape(report.verb)}: <span class='{verdict}'>{verdict}</span></h2>"
        )
        for table in report.tables():
            parts.append(f"<table><caption>{html.escape(table.title)}</caption><tr>")
            parts.extend(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
            parts.append("</tr>")
            for row in table.rows:
                cells = "".join(f"<td>{html.escape(format_value(v))}</td>" for v in row)
                parts.append(f"<tr>{cells}</tr>")
            parts.append("</table>")
        parts.extend(f"<p class='note'>{html.escape(n)}</p>" for n in report.notes)
        if isinstance(report.result, Illustrated):
            parts.extend(f"<figure>{svg}</figure>" for svg in report.result.figures())
    parts.extend(f"<figure>{svg}</figure>" for svg in figures)
    parts.append("</body></html>")
    return "\n".join(parts)


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0;font-size:14px}"
    "caption{text-align:left;font-weight:600;padding:4px 0}"
    "th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}"
    "th{background:#f3f3f3}.ok{color:#080}.FAILED{color:#b00}.note{color:#555}"
    "figure{margin:1em 0}figure svg{max-width:100%;height:auto}"
)
