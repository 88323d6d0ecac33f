"""The batcher's queue-delay timer: a timerfd the loop reads against the thread it replaced.

    taskset -c 0 .venv/bin/python benchmarks/serve_timers.py [--waits 3000] [--rounds 3]

Each round runs ``--waits`` waits of ``--delay-us`` one after another on a uvloop loop (each
callback arms the next, as the batcher arms one wait at a time), once through
``serve.timers.call_at_ns`` (the timerfd on Linux) and once through the thread fallback
(``timers._THREAD_TIMER``, what the executor used before), in alternating order. Printed per
timer: CPU seconds of the whole process per wait (both threads for the fallback), and how late
the callbacks ran (p50, p90). Pin it to one core (taskset) to see the cost of the fallback's
thread switch, as on a server whose loop and sessions share a core.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).parent))
from machine import cpu_summary, load_average
from onnxferry.serve import timers

Arm = Callable[[asyncio.AbstractEventLoop, int, Callable[[], None]], None]


def _thread(loop: asyncio.AbstractEventLoop, when_ns: int, callback: Callable[[], None]) -> None:
    timers._THREAD_TIMER.call_at(when_ns, loop, callback)


TIMERS: dict[str, Arm] = {"timerfd (call_at_ns)": timers.call_at_ns, "thread": _thread}


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(arm: Arm, waits: int, delay_ns: int) -> tuple[float, list[float]]:
    """(CPU seconds per wait, lateness of each callback in us)."""
    loop = uvloop.new_event_loop()
    late: list[float] = []
    done = loop.create_future()

    def schedule() -> None:
        due = time.monotonic_ns() + delay_ns

        def fired() -> None:
            late.append((time.monotonic_ns() - due) / 1e3)
            if len(late) == waits:
                done.set_result(None)
            else:
                schedule()

        arm(loop, due, fired)

    try:
        before = _cpu_s()
        loop.call_soon(schedule)
        loop.run_until_complete(done)
        return (_cpu_s() - before) / waits, late
    finally:
        loop.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--waits", type=int, default=3000)
    p.add_argument("--delay-us", type=int, default=500)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    print(cpu_summary())
    print(f"load average {load_average()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    cpu: dict[str, list[float]] = {k: [] for k in TIMERS}
    late: dict[str, list[float]] = {k: [] for k in TIMERS}
    for r in range(args.rounds):
        names = list(TIMERS) if r % 2 == 0 else list(reversed(TIMERS))
        for name in names:
            per_wait, lateness = run(TIMERS[name], args.waits, args.delay_us * 1000)
            cpu[name].append(per_wait)
            late[name].extend(lateness)
    for name in TIMERS:
        q = statistics.quantiles(late[name], n=10)
        print(
            f"{name}: CPU {statistics.median(cpu[name]) * 1e6:.1f} us a wait "
            f"(rounds {', '.join(f'{c * 1e6:.1f}' for c in cpu[name])}); late p50 "
            f"{statistics.median(late[name]):.1f} us, p90 {q[8]:.1f} us"
        )


if __name__ == "__main__":
    main()
