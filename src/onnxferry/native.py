"""What native (C/C++) code prints, kept off the terminal: file descriptors pointed at a
temporary file for a block, its text read back whenever asked.

    with native_output() as native:     # fd 2 (stderr); native_output((1, 2)) for both
        os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on")  # as TensorFlow
    native.text()                        # what was written, so far or in all

Python's ``sys.stderr`` is left alone (``contextlib.redirect_stderr`` is for that); where a
descriptor cannot be redirected (no fd 2, a closed stream), the block runs as it is and the
text is empty.

Native code that may crash the process (OpenVINO's converter, onnx2tf and TensorFlow) runs in
a spawned worker, whose death is one line:

    with spawned_worker("OpenVINO crashed converting the model", hint="...") as pool:
        pool.submit(len, "abc").result()    # InputError if the worker dies
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import BinaryIO

from .errors import InputError


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


@contextlib.contextmanager
def spawned_worker(crashed: str, *, hint: str) -> Iterator[ProcessPoolExecutor]:
    """One spawned worker process (its native libraries stay out of this one, its console goes
    nowhere, and it ends when this process does); when it dies (a segfault or an abort in
    native code), InputError(``crashed``, hint=``hint``)."""
    import multiprocessing
    from concurrent.futures.process import BrokenProcessPool

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=1, mp_context=context, initializer=_quiet_worker, initargs=(os.getpid(),)
    ) as pool:
        try:
            yield pool
        except BrokenProcessPool as e:
            raise InputError(crashed, hint=hint) from e


def _quiet_worker(parent: int) -> None:
    """(In the worker.) Its console, C++ logging and the processes it starts included, goes
    nowhere but what ``native_output`` takes; and it ends when its parent does (a killed
    parent would otherwise leave it waiting for work, for ever). ``parent`` comes from the
    parent: it may be gone before this runs."""
    import threading
    import time

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="ferry-worker-parent-watch", daemon=True).start()
