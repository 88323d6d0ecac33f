"""Library chatter kept off the terminal and put into the report.

    with captured() as chatter:
        logging.warning("Axis 1 is out-of-range")   # as ORT's quantizer logs, and C++ stderr
    chatter.lines                             # every line, in order
    chatter.summary()                         # distinct lines with counts, most frequent first

Captures Python warnings, log records (the root logger's handlers are silenced meanwhile),
writes to ``sys.stderr`` and ``sys.stdout`` (ORT's transformers optimizer prints "failed in
shape inference" there, which would corrupt ``--json``) and, at the file-descriptor level, what
native code prints on stderr (ONNX Runtime's C++ log, symbolic shape inference). The search's
own report is printed after the capture ends, so nothing of it is lost. A capture inside
another (a pass quietening its library inside the search) hands its lines to the outer one when
it ends."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..native import NativeOutput, native_output


@dataclass
class Captured:
    """What the libraries printed while a search ran."""

    lines: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.lines.extend(line.rstrip() for line in text.splitlines() if line.strip())

    def summary(self, shown: int = 20) -> list[str]:
        """Distinct lines, most frequent first, "(xN)" where repeated."""
        counts = Counter(self.lines)
        return [f"{line} (x{n})" if n > 1 else line for line, n in counts.most_common(shown)]


class _Collect(logging.Handler):
    def __init__(self, into: Captured) -> None:
        super().__init__(logging.DEBUG)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.into.add(f"{record.levelname.lower()}: {record.getMessage()}")


_OPEN: list[Captured] = []
"""The captures in progress, innermost last."""


def _drop(record: logging.LogRecord) -> bool:
    return False


@contextlib.contextmanager
def captured() -> Iterator[Captured]:
    """Capture warnings, logging, ``sys.stderr``, ``sys.stdout`` and fd 2 for the duration
    (see module)."""
    into = Captured()
    root = logging.getLogger()
    handler = _Collect(into)
    silenced = list(root.handlers)
    for h in silenced:
        h.addFilter(_drop)
    root.addHandler(handler)
    level = root.level
    if level > logging.WARNING or level == logging.NOTSET:
        root.setLevel(logging.WARNING)
    err, out = io.StringIO(), io.StringIO()
    _OPEN.append(into)
    native: NativeOutput | None = None
    try:
        with contextlib.ExitStack() as stack:
            native = stack.enter_context(native_output())
            caught = stack.enter_context(warnings.catch_warnings(record=True))
            warnings.simplefilter("always")
            stack.enter_context(contextlib.redirect_stderr(err))
            stack.enter_context(contextlib.redirect_stdout(out))  # ORT's transformers print()
            try:
                yield into
            finally:
                root.removeHandler(handler)
                root.setLevel(level)
                for h in silenced:
                    h.removeFilter(_drop)
                for w in caught:
                    into.add(f"{w.category.__name__}: {w.message}")
                into.add(err.getvalue())
                into.add(out.getvalue())
    finally:
        if native is not None:
            into.add(native.text())
        _OPEN[:] = [c for c in _OPEN if c is not into]
        if _OPEN:
            _OPEN[-1].lines.extend(into.lines)
