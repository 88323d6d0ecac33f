"""What native (C/C++) code prints, kept off the terminal: file descriptors pointed at a
temporary file for a block, its text read back whenever asked.

    with native_output() as native:     # fd 2 (stderr); native_output((1, 2)) for both
        os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on")  # as TensorFlow
    native.text()                        # what was written, so far or in all

Python's ``sys.stderr`` is left alone (``contextlib.redirect_stderr`` is for that); where a
descriptor cannot be redirected (no fd 2, a closed stream), the block runs as it is and the
text is empty.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import BinaryIO


class NativeOutput:
    """The temporary file the descriptors write to while the block runs."""

    def __init__(self, sink: BinaryIO) -> None:
        self._sink = sink
        self._text = ""

    def text(self) -> str:
        """Everything written so far (undecodable bytes replaced); after the block, all of it."""
        if not self._sink.closed:
            self._sink.seek(0)
            self._text = self._sink.read().decode("utf-8", errors="replace")
        return self._text


@contextlib.contextmanager
def native_output(fds: tuple[int, ...] = (2,)) -> Iterator[NativeOutput]:
    """Point ``fds`` at one temporary file for the block (see the module docstring)."""
    for stream in (sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            stream.flush()  # type: ignore[union-attr]
    with tempfile.TemporaryFile() as sink:
        output = NativeOutput(sink)
        saved: list[tuple[int, int]] = []
        try:
            for fd in fds:
                saved.append((fd, os.dup(fd)))
                os.dup2(sink.fileno(), fd)
        except OSError:
            pass
        try:
            yield output
        finally:
            for stream in (sys.__stdout__, sys.__stderr__):
                with contextlib.suppress(Exception):
                    stream.flush()  # type: ignore[union-attr]
            for fd, copy in saved:
                os.dup2(copy, fd)
                os.close(copy)
            output.text()  # read it before the file goes
