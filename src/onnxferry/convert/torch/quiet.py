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
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from ...errors import one_line

_ANSI_COLOURS = re.compile(r"\x1b\[[0-9;]*m")


def torch_error(error: BaseException) -> str:
    """``"RuntimeError: what went wrong"``: the type and first line of one of torch's errors
    (its messages go on with traces and graphs), without terminal colours."""
    return one_line(error, line="first", drop=_ANSI_COLOURS, named=True)


@dataclass
class QuietOutput:
    """What torch printed inside ``quiet``: Python prints and the native (C++) streams."""

    python: io.StringIO
    native: BinaryIO

    def text(self) -> str:
        self.native.seek(0)
        return self.python.getvalue() + self.native.read().decode(errors="replace")


@contextlib.contextmanager
def quiet() -> Iterator[QuietOutput]:
    """Silence torch while exporting: progress prints, warnings, torch's log messages and what
    its C++ code writes to the process's stdout and stderr (kept for error messages)."""
    native = tempfile.TemporaryFile()  # noqa: SIM115 (closed by the with block below)
    output = QuietOutput(io.StringIO(), native)
    loggers = [logging.getLogger("torch")]
    loggers += [
        logger
        for name, logger in logging.Logger.manager.loggerDict.items()
        if name.startswith("torch.") and isinstance(logger, logging.Logger)
    ]
    levels = [logger.level for logger in loggers]
    with (
        native,
        warnings.catch_warnings(),
        contextlib.redirect_stdout(output.python),
        contextlib.redirect_stderr(output.python),
        _native_streams_to(output.native.fileno()),
    ):
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.CRITICAL + 1)
        try:
            yield output
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


@contextlib.contextmanager
def _native_streams_to(fd: int) -> Iterator[None]:
    """Point file descriptors 1 and 2 at ``fd`` (nothing happens where they cannot be)."""
    saved: list[tuple[int, int]] = []
    for stream in (sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            stream.flush()  # type: ignore[union-attr]
    try:
        for target in (1, 2):
            saved.append((target, os.dup(target)))
            os.dup2(fd, target)
    except OSError:
        pass
    try:
        yield
    finally:
        for target, copy in saved:
            os.dup2(copy, target)
            os.close(copy)
