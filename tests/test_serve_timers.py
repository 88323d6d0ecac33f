"""serve.timers: callbacks on the loop at sub-millisecond times, never early, in time order;
on Linux through a timerfd the loop reads (no thread), closed with its loop."""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import threading
import time
from collections.abc import Callable

import pytest
import uvloop

from onnxferry.serve import timers

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def _fire(loop: asyncio.AbstractEventLoop, offsets_us: list[int]) -> list[tuple[int, int, int]]:
    """Schedule a callback at now + each offset; (offset, due, called) of each, in call order."""
    calls: list[tuple[int, int, int]] = []
    done = loop.create_future()

    def schedule() -> None:
        start = time.monotonic_ns()
        for offset in offsets_us:
            due = start + offset * 1000

            def call(offset: int = offset, due: int = due) -> None:
                calls.append((offset, due, time.monotonic_ns()))
                if len(calls) == len(offsets_us):
                    done.set_result(None)

            timers.call_at_ns(loop, due, call)

    loop.call_soon(schedule)
    loop.run_until_complete(asyncio.wait_for(done, 5))
    return calls


@pytest.mark.parametrize("kind", list(LOOPS))
def test_callbacks_come_in_time_order_and_never_early(kind: str) -> None:
    loop = LOOPS[kind]()
    try:
        calls = _fire(loop, [300, 100, 200, 100, -50])
    finally:
        loop.close()
    assert [offset for offset, _, _ in calls] == [-50, 100, 100, 200, 300]
    assert all(called >= due for _, due, called in calls)
    # The loop's own timers would round 0.1 ms to 0 or 1 ms; a loaded machine may be late.
    late_us = sorted((called - due) / 1000 for _, due, called in calls)
    assert late_us[len(late_us) // 2] < 20_000, late_us


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd is Linux's")
def test_on_linux_the_loop_reads_a_timerfd_closed_with_the_loop() -> None:
    fds_before = set(os.listdir("/proc/self/fd"))
    loop = uvloop.new_event_loop()
    _fire(loop, [100])
    assert loop in timers._loop_timers  # the loop's own timerfd, no thread woken
    assert not any(t.name == "ferry-timer" for t in threading.enumerate())
    loop.close()
    del loop
    gc.collect()
    assert set(os.listdir("/proc/self/fd")) <= fds_before  # its timerfd (and epoll fd) closed


def test_a_callback_that_raises_leaves_the_others_armed() -> None:
    loop = asyncio.new_event_loop()
    errors: list[object] = []
    loop.set_exception_handler(lambda _, context: errors.append(context.get("exception")))
    calls: list[str] = []
    done = loop.create_future()

    def fail() -> None:
        calls.append("fail")
        raise RuntimeError("a callback's bug")

    def later() -> None:
        calls.append("later")
        done.set_result(None)

    now = time.monotonic_ns()
    timers.call_at_ns(loop, now + 100_000, fail)
    timers.call_at_ns(loop, now + 2_000_000, later)
    try:
        loop.run_until_complete(asyncio.wait_for(done, 5))
    finally:
        loop.close()
    assert calls == ["fail", "later"]
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)


def test_the_thread_fallback_keeps_the_same_contract() -> None:
    loop = asyncio.new_event_loop()
    calls: list[int] = []
    done = loop.create_future()
    now = time.monotonic_ns()
    # Far enough apart that the thread cannot fire the first before the second is armed.
    for i, offset_us in enumerate([200_000, 100_000]):

        def call(i: int = i) -> None:
            calls.append(i)
            if len(calls) == 2:
                done.set_result(time.monotonic_ns())

        timers._THREAD_TIMER.call_at(now + offset_us * 1000, loop, call)
    try:
        finished = loop.run_until_complete(asyncio.wait_for(done, 5))
    finally:
        loop.close()
    assert calls == [1, 0] and finished >= now + 200_000_000
