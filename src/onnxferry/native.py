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

A worker whose imports are slow (TensorFlow: about 7 s) can be kept for the next block that
names it, for KEEP_S after its last use (``keep="tensorflow"``). Work that may never end runs
with a deadline, past which the worker is killed (the next block starts another):

    with spawned_worker("...", hint="...") as pool:
        within(pool, 60.0, len, "abc")      # TimeoutError after 60 s
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import BinaryIO, TypeVar

from .errors import InputError

KEEP_S = 60.0
"""How long a kept worker waits for its next block before it ends (its memory given back)."""

T = TypeVar("T")


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
def spawned_worker(
    crashed: str, *, hint: str, keep: str | None = None
) -> Iterator[ProcessPoolExecutor]:
    """One spawned worker process (its native libraries stay out of this one, its console goes
    nowhere, and it ends when this process does); when it dies (a segfault or an abort in
    native code), InputError(``crashed``, hint=``hint``). With ``keep``, the worker of that
    name is used and kept for KEEP_S after the block (one is started when there is none, and
    a fresh one used while another thread holds it); one that died is dropped."""
    from concurrent.futures.process import BrokenProcessPool

    try:
        kept = _take(keep) if keep is not None else None
    except BrokenProcessPool as e:
        raise InputError(crashed, hint=hint) from e
    if kept is None:
        with _new_pool() as pool:
            try:
                _start(pool)
                yield pool
            except BrokenProcessPool as e:
                raise InputError(crashed, hint=hint) from e
        return
    broken = False
    try:
        yield kept.pool
    except BrokenProcessPool as e:
        broken = True
        raise InputError(crashed, hint=hint) from e
    finally:
        _release(kept, broken)


def within(
    pool: ProcessPoolExecutor, seconds: float | None, fn: Callable[..., T], *args: object
) -> T:
    """``fn(*args)`` in ``pool``'s worker, waited for ``seconds`` at most (None: for ever);
    past them the worker is killed, since what it runs may not stop when asked (native code,
    or a Python loop that catches every exception), and TimeoutError raised. ``pool`` is of
    no more use; a kept worker killed so is forgotten (the next block starts another)."""
    future = pool.submit(fn, *args)
    try:
        return future.result(timeout=seconds)
    except TimeoutError:
        for process in list(getattr(pool, "_processes", {}).values()):
            process.kill()
        with _kept_lock:
            for kept in [k for k in _kept.values() if k.pool is pool]:
                _drop(kept)
        raise


def _new_pool() -> ProcessPoolExecutor:
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(
        max_workers=1, mp_context=context, initializer=_quiet_worker, initargs=(os.getpid(),)
    )


def _start(pool: ProcessPoolExecutor) -> None:
    """Start ``pool``'s one worker now, with the caller's main script hidden from it: spawn
    runs that script again in the child, and one without ``if __name__ == "__main__"``
    (a user's ``ship.py``) ran its whole body there and tried to start a worker of its own,
    so the worker died before its first task (a kept one was started again for ever). Only
    onnxferry's functions go to the worker."""
    main = sys.modules.get("__main__")
    saved = {k: v for k, v in vars(main).items() if k in ("__file__", "__spec__")} if main else {}
    try:
        if main is not None:
            main.__spec__ = None
            vars(main).pop("__file__", None)
        pool.submit(os.getpid).result()
    finally:
        if main is not None:
            vars(main).update(saved)


@dataclass
class _Kept:
    """A kept worker: its pool, whether a block holds it, and which release last set its
    timer (an older timer that fires late leaves it alone)."""

    name: str
    pool: ProcessPoolExecutor
    busy: bool = False
    released: int = 0
    timer: threading.Timer | None = field(default=None, repr=False)


_kept: dict[str, _Kept] = {}
_kept_lock = threading.Lock()


def _take(name: str, again: bool = True) -> _Kept | None:
    """The kept worker ``name`` (started if there is none, started again, once, if it died
    while idle), in this process's working folder and environment as a fresh worker would
    be; None while another block holds it. BrokenProcessPool when it cannot start."""
    from concurrent.futures.process import BrokenProcessPool

    with _kept_lock:
        kept = _kept.get(name)
        if kept is None:
            kept = _kept[name] = _Kept(name, _new_pool())
        if kept.busy:
            return None
        kept.busy = True
        if kept.timer is not None:
            kept.timer.cancel()
    try:
        _start(kept.pool)
        kept.pool.submit(_follow, _cwd(), dict(os.environ)).result()
    except BrokenProcessPool:
        _release(kept, broken=True)
        if not again:
            raise
        return _take(name, again=False)
    return kept


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # removed while this process was in it
        return None


def _follow(cwd: str | None, environ: dict[str, str]) -> None:
    """(In a kept worker.) The parent's working folder and environment, as now."""
    if cwd is not None:
        with contextlib.suppress(OSError):
            os.chdir(cwd)
    os.environ.clear()
    os.environ.update(environ)


def _release(kept: _Kept, broken: bool) -> None:
    with _kept_lock:
        kept.busy = False
        kept.released += 1
        if broken:
            _drop(kept)
            return
        kept.timer = threading.Timer(KEEP_S, _expire, (kept, kept.released))
        kept.timer.daemon = True
        kept.timer.start()


def _expire(kept: _Kept, released: int) -> None:
    with _kept_lock:
        if not kept.busy and kept.released == released:
            _drop(kept)


def _drop(kept: _Kept) -> None:
    """(Holding _kept_lock.) Forget ``kept`` and let its worker end."""
    if _kept.get(kept.name) is kept:
        del _kept[kept.name]
    kept.pool.shutdown(wait=False, cancel_futures=True)


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
