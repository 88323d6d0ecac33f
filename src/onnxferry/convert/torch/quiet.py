"""Keeping torch quiet: silence what it prints while it loads or exports, and shorten its
exceptions to one line for our messages.

    with quiet() as output:      # prints, warnings, torch's logs and its C++ stdout/stderr
        torch.onnx.export(...)
        printed = output.text()  # what it printed so far (inside the block), for an error
    torch_error(error)           # "RuntimeError: first line of the message"
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ...errors import one_line
from ...native import NativeOutput, native_output

_ANSI_COLOURS = re.compile(r"\x1b\[[0-9;]*m")
_FIXED_VALUE = re.compile(
    r"(?:Converting a tensor to )?(a Python \w+|Iterating over a tensor) might cause the trace"
)


def _short_path(filename: str) -> str:
    """A source file as its package path (``torchdiffeq/_impl/solvers.py``: from
    ``site-packages``), relative to the working directory, or its last three parts."""
    path = Path(filename)
    if "site-packages" in path.parts:
        return "/".join(path.parts[path.parts.index("site-packages") + 1 :])
    if path.is_relative_to(Path.cwd()):
        return path.relative_to(Path.cwd()).as_posix()
    return "/".join(path.parts[-3:])


def torch_error(error: BaseException) -> str:
    """``"RuntimeError: what went wrong"``: the type and first line of one of torch's errors
    (its messages go on with traces and graphs), without terminal colours. The TorchScript
    interpreter's errors (``torch.jit.Error``) end in what the model's own code raised
    (``builtins.ValueError: Supported sampling rates: [8000, 16000]``): that line."""
    if type(error).__module__ == "torch.jit" and type(error).__name__ == "Error":
        return one_line(error, line="last", drop=_ANSI_COLOURS).removeprefix("builtins.")
    return one_line(error, line="first", drop=_ANSI_COLOURS, named=True)


@dataclass
class QuietOutput:
    """What torch printed inside ``quiet``: Python prints and the native (C++) streams, and
    the warnings raised."""

    python: io.StringIO
    native: NativeOutput
    warned: list[warnings.WarningMessage]

    def text(self) -> str:
        return self.python.getvalue() + self.native.text()

    def trace_caveats(self) -> list[str]:
        """Where a trace took a value computed from tensors as a constant (torch's
        TracerWarnings "Converting a tensor to a Python boolean might cause the trace to be
        incorrect", and iterating over a tensor): "a Python boolean at
        torchdiffeq/_impl/solvers.py:104", once a place. (Its warnings about shapes are left
        out: verification varies the shapes.)"""
        said: dict[str, None] = {}
        for warning in self.warned:
            found = _FIXED_VALUE.match(str(warning.message))
            if found and warning.category.__name__ == "TracerWarning":
                said[f"{found[1]} at {_short_path(warning.filename)}:{warning.lineno}"] = None
        return list(said)


@contextlib.contextmanager
def quiet() -> Iterator[QuietOutput]:
    """Silence torch while exporting: progress prints, warnings, torch's log messages and what
    its C++ code writes to the process's stdout and stderr (kept for error messages)."""
    python = io.StringIO()
    loggers = [logging.getLogger("torch")]
    loggers += [
        logger
        for name, logger in logging.Logger.manager.loggerDict.items()
        if name.startswith("torch.") and isinstance(logger, logging.Logger)
    ]
    levels = [logger.level for logger in loggers]
    with (
        warnings.catch_warnings(record=True) as warned,
        contextlib.redirect_stdout(python),
        contextlib.redirect_stderr(python),
        native_output((1, 2)) as native,
    ):
        output = QuietOutput(python, native, warned)
        warnings.simplefilter("always")
        for logger in loggers:
            logger.setLevel(logging.CRITICAL + 1)
        try:
            yield output
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)
