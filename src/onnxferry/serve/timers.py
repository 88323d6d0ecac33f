"""Sub-millisecond timers for an event loop: the batcher's queue delay is 0.5 ms by default.

    loop = asyncio.get_running_loop()
    call_at_ns(loop, time.monotonic_ns() + 500_000, callback)   # callback() on loop, ~0.5 ms on
    await asyncio.sleep(0.001)                                  # it has run by now

Event loops round their timers to whole milliseconds (asyncio up, uvloop to the nearest), too
coarse for a queue delay under a millisecond. On Linux each loop gets a ``timerfd``
(CLOCK_MONOTONIC, the clock of ``time.monotonic_ns``) registered as a reader of the loop:
arming it is one system call, and the loop itself wakes when it expires, on its own thread.
Elsewhere (or where the timerfd calls are missing) one daemon thread serves every loop; each
wait then costs a thread wake-up and a GIL hand-off (measured 55-62 us of CPU on one core,
benchmarks/RESULTS.md "serve_frontend"), which the timerfd avoids.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import heapq
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

Callback = Callable[[], Any]

_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = 0o2000000
_TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def call_at_ns(loop: asyncio.AbstractEventLoop, when_ns: int, callback: Callback) -> None:
    """Call ``callback()`` on ``loop`` at the ``time.monotonic_ns()`` time ``when_ns`` (at once
    if it has passed). Not cancellable: a callback checks whether it is still wanted."""
    timer = _loop_timers.get(loop)
    if timer is None and _timerfd is not None:
        with contextlib.suppress(OSError):
            timer = _loop_timers[loop] = _TimerFd(loop)
    if timer is None:
        _THREAD_TIMER.call_at(when_ns, loop, callback)
    else:
        timer.call_at(when_ns, callback)


def _load_timerfd() -> Any:
    """libc with timerfd_create / timerfd_settime, or None (not Linux, or not found)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.timerfd_settime.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(_Itimerspec),
            ctypes.c_void_p,
        ]
    except (OSError, AttributeError):
        return None
    return libc


_timerfd = _load_timerfd()


class _TimerFd:
    """The timers of one loop: a heap of (when, order, callback) and a timerfd armed for the
    earliest, read by the loop. The descriptor is closed when the loop is collected."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        fd = _timerfd.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self._fd = fd
        self._heap: list[tuple[int, int, Callback]] = []
        self._count = 0
        self._armed_ns: int | None = None
        self._spec = _Itimerspec()
        try:
            loop.add_reader(fd, self._fired)
        except Exception:
            os.close(fd)
            raise
        weakref.finalize(loop, os.close, fd)

    def call_at(self, when_ns: int, callback: Callback) -> None:
        self._count += 1
        heapq.heappush(self._heap, (when_ns, self._count, callback))
        if self._armed_ns is None or when_ns < self._armed_ns:
            self._arm(when_ns)

    def _arm(self, when_ns: int) -> None:
        when_ns = max(1, when_ns)  # an all-zero time would disarm the timer
        self._spec.it_value.tv_sec, self._spec.it_value.tv_nsec = divmod(when_ns, 1_000_000_000)
        if _timerfd.timerfd_settime(self._fd, _TFD_TIMER_ABSTIME, self._spec, None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")
        self._armed_ns = when_ns

    def _fired(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            os.read(self._fd, 8)  # the expiry count; reading it clears readiness
        self._armed_ns = None
        now = time.monotonic_ns()
        heap = self._heap
        try:
            while heap and heap[0][0] <= now:
                heapq.heappop(heap)[2]()
        finally:  # the rest stay armed even if a callback raised (the loop logs it)
            if heap:
                self._arm(heap[0][0])


_loop_timers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _TimerFd] = (
    weakref.WeakKeyDictionary()
)


class _ThreadTimer:
    """The fallback: one daemon thread for every loop, a Condition to wait on, ~0.1 ms late."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[int, int, asyncio.AbstractEventLoop, Callback]] = []
        self._count = 0
        self._thread: threading.Thread | None = None

    def call_at(self, when_ns: int, loop: asyncio.AbstractEventLoop, callback: Callback) -> None:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ferry-timer", daemon=True)
                self._thread.start()
            self._count += 1
            heapq.heappush(self._heap, (when_ns, self._count, loop, callback))
            if self._heap[0][1] == self._count:
                self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while True:
                if not self._heap:
                    self._cond.wait()
                    continue
                remaining = self._heap[0][0] - time.monotonic_ns()
                if remaining > 0:
                    self._cond.wait(remaining / 1e9)
                    continue
                _, _, loop, callback = heapq.heappop(self._heap)
                with contextlib.suppress(RuntimeError):  # the loop has closed
                    loop.call_soon_threadsafe(callback)


_THREAD_TIMER = _ThreadTimer()
