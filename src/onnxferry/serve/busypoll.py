"""Busy polling: the event loop kept awake for a moment after the last response, so that a
client sending one request after another finds the server's core warm.

    app = BusyPoll(app, window_us=1000)       # the ASGI app uvicorn runs (ServerOptions)
    app.spinning                              # polling without sleeping right now

Once no HTTP request is in flight, a callback re-armed with ``call_soon`` until ``window_us``
after the last response ends makes every loop iteration poll its sockets with a zero
timeout instead of sleeping. A core that sleeps between requests runs the next one slower:
on the 2-core VM of benchmarks/serve_floors.py a batch-1 MLP ``session.run`` took 55 us
after 50 us asleep against 28 us hot, and ``ferry serve``'s concurrency-1 p50 fell by 12-17 %
with a 1 ms window (RESULTS.md, serve_floors). Never while a request is in flight: a batch
running in a worker thread on the same core keeps the core. The price is up to a core for
``window_us`` after each response, so it is off unless asked for (``--busy-poll-us``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

ASGIApp = Any  # (scope, receive, send) -> awaitable; uvicorn's own types are not public


class BusyPoll:
    """ASGI middleware around ``app``: see the module docstring."""

    def __init__(self, app: ASGIApp, window_us: float) -> None:
        self.app = app
        self.window_ns = int(window_us * 1e3)
        self.until_ns = 0
        self.inflight = 0
        self.spinning = False
        self.spins = 0
        """Loop iterations spent polling (for tests and benchmarks)."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.inflight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.inflight -= 1
            if not self.inflight:
                self.until_ns = time.monotonic_ns() + self.window_ns
                if not self.spinning:
                    self.spinning = True
                    asyncio.get_running_loop().call_soon(self._spin)

    def _spin(self) -> None:
        if not self.inflight and time.monotonic_ns() < self.until_ns:
            self.spins += 1
            asyncio.get_running_loop().call_soon(self._spin)
        else:
            self.spinning = False
