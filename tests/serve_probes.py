"""Probes of a running server for the hardening tests: connections and a health poller.

answers = kept_answering_while(url, lambda: post(url, big_body), work_s=1.2)
# the event loop was never held by the work; ``answers``: what the work returned
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def address(url: str) -> tuple[str, int]:
    """(host, port) of ``http://host:port``."""
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def connection(url: str, timeout: float = 60) -> http.client.HTTPConnection:
    """A keep-alive HTTP connection to ``http://host:port``."""
    return http.client.HTTPConnection(*address(url), timeout=timeout)


def exchange(
    url: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request on a connection of its own: (status, response headers, body)."""
    conn = connection(url, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def request(
    url: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """``exchange`` without the response headers: (status, body)."""
    status, _, data = exchange(url, method, path, body, headers)
    return status, data


def raw(url: str, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a fresh socket; everything the server answers until it closes."""
    with socket.create_connection(address(url), timeout=timeout) as sock:
        sock.sendall(data)
        return read_until_closed(sock)


def read_until_closed(sock: socket.socket) -> bytes:
    """What arrives on ``sock`` until the server closes (or resets, or the timeout passes)."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


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


def kept_answering_while(
    url: str, work: Callable[[], T], work_s: float, quick: float = 0.05, tries: int = 2
) -> list[T]:
    """Run ``work`` while polling health (``poll_health_while``) and assert that ``work_s``
    seconds of it never held the event loop: nine in ten polls under ``max(quick, work_s /
    4)`` and none near the work's length. A loop doing the work itself holds one poll for all
    of it, on every try. A busy CI machine can stall the whole process (the server runs in
    the test's process) for a second once in a while, so a try that fails is run again, up to
    ``tries`` in all; every try must fail for the assertion to fail. Returns what the last
    ``work`` returned."""
    failures = []
    for _ in range(tries):
        latencies, answer = poll_health_while(url, work)
        failure = _held(latencies, work_s, quick)
        if failure is None:
            return answer
        failures.append(failure)
    raise AssertionError(f"the loop was held in all {tries} tries: " + "; ".join(failures))


def _held(latencies: list[float], work_s: float, quick: float) -> str | None:
    """Why the polls show a held loop, or None."""
    if len(latencies) < 5:
        return f"only {len(latencies)} polls answered: {latencies}"
    ordered = sorted(latencies)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    if p90 >= max(quick, work_s / 4):
        return f"p90 poll {p90:.3f} s, the work {work_s:.3f} s (slowest {ordered[-5:]})"
    if ordered[-1] >= max(2 * quick, work_s / 2):
        return f"slowest poll {ordered[-1]:.3f} s, the work {work_s:.3f} s"
    return None
