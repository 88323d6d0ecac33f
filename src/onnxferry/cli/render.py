"""Output: a verb's report as rich tables or JSON on stdout, saved to a file when asked.

    code = emit(report, as_json, report_path)    # prints, saves (.html: a page), returns the code
    emit(Report("passes", Listing([table])), False, None)
    emit_fields({"public key": "keys/public_key.pem"}, as_json=False)   # public key: keys/...

Tables go through rich: full width in a pipe, folded to the terminal's width otherwise. What
a report holds is printed as written, never read as rich markup: a shape ``[batch, 3]`` or a
name with brackets stays on screen.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, TextIO, TypeVar

import click

from ..report import Report, Table, format_value

T = TypeVar("T")

_SHORT_CELL = 24
"""The longest cell (in characters) of a column that is never wrapped."""


_JSON_OUT: list[TextIO] = []
"""Where ``echo_json`` writes while ``json_only_stdout`` holds stdout for the JSON."""


@contextlib.contextmanager
def json_only_stdout(active: bool) -> Iterator[None]:
    """With ``--json`` (``active``), stdout carries the JSON alone: what a library or the
    user's code prints while the verb runs (nnAudio's "STFT kernels created" from a factory)
    goes to stderr, and ``echo_json`` writes to the stdout there was."""
    if not active:
        yield
        return
    _JSON_OUT.append(sys.stdout)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        _JSON_OUT.pop()


def echo_json(text: str) -> None:
    """Print a verb's JSON on stdout (the one ``json_only_stdout`` kept)."""
    click.echo(text, file=_JSON_OUT[-1] if _JSON_OUT else None)


def emit(report: Report[Any], as_json: bool, report_path: Path | None) -> int:
    """Print a report (rich tables or JSON), save it if asked, and return its exit code."""
    if as_json:
        echo_json(report.to_json())
    else:
        print_tables(report)
    if report_path is not None:
        report.write(report_path)  # JSON, or the HTML page for .html
        if not as_json:
            click.echo(f"report: {report_path}", err=True)
    return report.exit_code


def emit_fields(fields: dict[str, str], as_json: bool) -> int:
    """Print a verb's few named results (paths it wrote): one JSON object whose keys use
    underscores, or one ``name: value`` line each. Returns exit 0."""
    if as_json:
        echo_json(json.dumps({name.replace(" ", "_"): value for name, value in fields.items()}))
    else:
        for name, value in fields.items():
            click.echo(f"{name}: {value}")
    return 0


def print_tables(report: Report[Any]) -> None:
    """The report's tables, notes and verdict, sized for a terminal or full-width in a pipe."""
    from rich.console import Console
    from rich.table import Table as RichTable
    from rich.text import Text

    terminal = Console()
    # A pipe or a log file gets full-width rows instead of folded cells.
    console = terminal if terminal.is_terminal else Console(width=240)
    for table in report.tables():
        rich_table = RichTable(title=Text(table.title), title_justify="left")
        cells = [[format_value(v) for v in row] for row in table.rows]
        for index, column in enumerate(table.columns):
            # Numbers and names never wrap; longer text folds (rich crops a no_wrap cell at the
            # console's width, so a long one there would lose its end).
            longest = max((len(row[index]) for row in cells), default=0)
            rich_table.add_column(column, overflow="fold", no_wrap=longest <= _SHORT_CELL)
        for row in cells:
            rich_table.add_row(*(Text(cell) for cell in row))
        console.print(rich_table)
    for note in report.notes:
        console.print(Text(f"note: {note}"))
    verdict = "[green]ok[/green]" if report.ok else "[red]FAILED[/red]"
    console.print(f"{report.verb}: {verdict}")


class Listing:
    """A report body that is just tables (for listings)."""

    def __init__(self, tables: list[Table]) -> None:
        self._tables = tables

    ok = True

    def to_dict(self) -> dict[str, Any]:
        """Each table's rows as records keyed by its columns."""
        return {
            "tables": [
                {
                    "title": t.title,
                    "rows": [dict(zip(t.columns, row, strict=True)) for row in t.rows],
                }
                for t in self._tables
            ]
        }

    def tables(self) -> list[Table]:
        return self._tables


def progress_unless_piped(
    bar: Callable[[], AbstractContextManager[T]], as_json: bool
) -> AbstractContextManager[T | None]:
    """``bar()`` (a progress bar's context) when stderr is a terminal and the output is not
    JSON; otherwise a context that gives None (no progress callback).

        with progress_unless_piped(lambda: progress_bar(epochs), as_json) as progress: ...
    """
    if sys.stderr.isatty() and not as_json:
        return bar()
    return nullcontext()
