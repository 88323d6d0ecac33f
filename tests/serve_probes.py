"""Probes of a running server for the hardening tests: connections and a health poller.

latencies, answers = poll_health_while(url, lambda: post(url, big_body))
assert max(latencies) < 0.05     # the event loop kept answering
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def connection(url: str, timeout: float = 60) -> http.client.HTTPConnection:
    """A keep-alive HTTP connection to ``http://host:port``."""
    host, port = url.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=timeout)


def poll_health_while(url: str, work: Callable[[], T]) -> tuple[list[float], list[T]]:
    """Run ``work`` in a thread while one connection polls /v2/health/live; the latencies of
    the polls (at most 10 000, at most 60 s) and what ``work`` returned."""
    done = threading.Event()
    answer: list[T] = []

    def run() -> None:
        try:
            answer.append(work())
        finally:
            done.set()

    latencies: list[float] = []
    conn = connection(url)
    try:
        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 60
        while not done.is_set() and len(latencies) < 10_000 and time.monotonic() < deadline:
            sent = time.monotonic()
            conn.request("GET", "/v2/health/live")
            response = conn.getresponse()
            response.read()
            assert response.status == 200
            latencies.append(time.monotonic() - sent)
        thread.join(60)
    finally:
        conn.close()
    return latencies, answer
