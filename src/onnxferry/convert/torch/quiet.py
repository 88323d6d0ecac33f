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

from ...errors import one_line
from ...native import NativeOutput, native_output

_ANSI_COLOURS = re.compile(r"\x1b\[[0-9;]*m")


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
    """What torch printed inside ``quiet``: Python prints and the native (C++) streams."""

    python: io.StringIO
    native: NativeOutput

    def text(self) -> str:
        return self.python.getvalue() + self.native.text()


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
        warnings.catch_warnings(),
        contextlib.redirect_stdout(python),
        contextlib.redirect_stderr(python),
        native_output((1, 2)) as native,
    ):
        output = QuietOutput(python, native)
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.CRITICAL + 1)
        try:
            yield output
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)
