"""Denormal floats flushed to zero while ONNX Runtime runs, and nowhere else.

    with flushed():                 # this thread: flush-to-zero and denormals-are-zero
        session.run(None, feeds)    # restored on exit
    flushes(model)                  # True when the model is marked (MODEL_KEY), as
                                    # ``optimize``'s flush_denormals pass marks it
    supported()                     # False where this thread's mode cannot be set

A float32 below 1.2e-38 is denormal, and x86 CPUs compute with one many times slower than
with a normal number. Transformer encoders meet them on padded inputs: all-MiniLM-L6-v2's
int8 model ran 1.35x faster on a short sentence padded to 128 with them flushed, with
identical outputs (benchmarks/RESULTS.md, "denormals"). ONNX Runtime's session entry
``session.set_denormal_as_zero`` flushes on the session's pool threads only, and on the thread
that creates the process's first session for good; the caller's thread, which does part of
every run, keeps its mode. ``runtime.create_session`` with ``SessionConfig.flush_denormals``
(or a marked model) therefore sets the entry, keeps the creating thread's mode, and runs every
call inside ``flushed()``: no numpy arithmetic of the caller's changes.

The thread's mode is set through the C library's ``fegetenv``/``fesetenv`` (glibc on x86-64:
MXCSR's FTZ and DAZ bits; on aarch64: FPCR's FZ bit); elsewhere ``flushed`` does nothing and
only the pool threads flush.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import platform
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

if TYPE_CHECKING:
    from .model import Model

MODEL_KEY = "onnxferry.flush_denormals"
"""metadata_props key marking a model to be run with denormals flushed ("1")."""
SESSION_ENTRY = "session.set_denormal_as_zero"
"""ONNX Runtime's session config entry: its pool threads flush."""

F = TypeVar("F", bound=Callable[..., Any])


class _Layout(NamedTuple):
    word: int  # which 32-bit word of fenv_t holds the flush bits
    bits: int


_LAYOUTS = {
    "x86_64": _Layout(7, 0x8040),  # fenv_t.__mxcsr (byte 28); FTZ (bit 15) and DAZ (bit 6)
    "aarch64": _Layout(0, 1 << 24),  # fenv_t.__fpcr; FZ (bit 24)
}
_FENV_WORDS = 16
"""fenv_t as 32-bit words, with room to spare (glibc's is 8 on x86-64, 2 on aarch64)."""


@functools.cache
def _libm() -> tuple[Any, _Layout] | None:
    layout = _LAYOUTS.get(platform.machine().lower().replace("amd64", "x86_64"))
    if layout is None or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    name = ctypes.util.find_library("m")
    try:
        libm = ctypes.CDLL(name or "libm.so.6")
        return libm, layout
    except OSError:
        return None


def supported() -> bool:
    """Whether this platform lets ``flushed`` set the calling thread's mode."""
    return _libm() is not None


def _mode() -> int | None:
    """This thread's flush bits (None where they cannot be read)."""
    found = _libm()
    if found is None:
        return None
    libm, layout = found
    env = (ctypes.c_uint32 * _FENV_WORDS)()
    if libm.fegetenv(env) != 0:
        return None
    return int(env[layout.word]) & layout.bits


def _set_mode(bits: int) -> None:
    found = _libm()
    if found is None:
        return
    libm, layout = found
    env = (ctypes.c_uint32 * _FENV_WORDS)()
    if libm.fegetenv(env) != 0:
        return
    env[layout.word] = env[layout.word] & ~layout.bits | bits
    libm.fesetenv(env)


@contextlib.contextmanager
def flushed(on: bool = True) -> Iterator[None]:
    """Inside: this thread flushes denormal results to zero and reads denormal inputs as zero
    (``on``; off: it keeps them). Outside: the thread's mode as it was."""
    before = _mode()
    found = _libm()
    if before is None or found is None or before == (found[1].bits if on else 0):
        yield
        return
    _set_mode(found[1].bits if on else 0)
    try:
        yield
    finally:
        _set_mode(before)


@contextlib.contextmanager
def kept() -> Iterator[None]:
    """This thread's flush mode is the same after the block as before it (ONNX Runtime sets
    it when it creates the process's first session)."""
    before = _mode()
    try:
        yield
    finally:
        if before is not None and _mode() != before:
            _set_mode(before)


def flushing(run: F) -> F:
    """``run`` (a session's run method) called inside ``flushed()``."""

    @functools.wraps(run)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with flushed():
            return run(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def flushes(model: Model) -> bool:
    """Whether ``model`` is marked to run with denormals flushed (MODEL_KEY is "1")."""
    return any(p.key == MODEL_KEY and p.value == "1" for p in model.proto.metadata_props)
