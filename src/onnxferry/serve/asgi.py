"""ASGI plumbing under the app: one-line HTTP errors, whole responses, and reading a request
body whole under a size limit, a deadline and a byte budget shared by every request.

    budget = ByteBudget(256 << 20)
    hold = Hold(budget)
    try:
        body = await read_body(receive, headers, None, hold, limit=64 << 20, timeout_s=30.0)
        await respond_json(send, 200, {"size": len(body)})
    except HttpError as e:
        await respond_error(send, e.status, e.message, e.headers)
    finally:
        hold.release()
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .protocol import Buffer, body_buffer

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[Mapping[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]


class ByteBudget:
    """Bytes held server-wide, taken and given back on the event loop thread (no lock).

    budget = ByteBudget(256 << 20)
    if not budget.take(n): refuse
    ...
    budget.give(n)
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> bool:
        """Hold ``size`` more bytes; False (holding nothing) when that would pass the limit."""
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used -= size


class Hold:
    """What one request holds of a ByteBudget; ``release`` (in a finally) gives it all back.

    hold = Hold(budget)
    try: hold.take(len(chunk)) ... finally: hold.release()
    """

    def __init__(self, budget: ByteBudget) -> None:
        self.budget = budget
        self.size = 0

    def take(self, size: int) -> None:
        """Hold ``size`` more bytes, or raise HttpError 503 with Retry-After."""
        if not self.budget.take(size):
            limit = self.budget.limit
            text = (
                f"the server holds too many request bodies: {size} more bytes would pass its "
                f"limit of {limit} bytes in flight; retry later"
            )
            raise HttpError(503, text, "busy", ((b"retry-after", b"1"),))
        self.size += size

    def release(self) -> None:
        self.budget.give(self.size)
        self.size = 0


class HttpError(Exception):
    """A response with a status and one line; ``reason`` labels the failure metric."""

    def __init__(
        self, status: int, message: str, reason: str, headers: tuple[tuple[bytes, bytes], ...] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.headers = headers
        self.model = ""
        self.version = ""


BODY_HEADERS = (b"content-type", b"content-encoding", b"inference-header-content-length")
"""The headers that say how to read a request's body."""


def request_headers(scope: Scope) -> dict[bytes, bytes]:
    """The request's headers by name (``dict(scope["headers"])``); HttpError 400 when one of
    ``BODY_HEADERS`` comes twice with different values, since a proxy in front may have read
    the body by the other one (Content-Length and Transfer-Encoding are httptools' to
    refuse)."""
    raw = scope["headers"]
    headers = dict(raw)
    if len(headers) != len(raw):
        for name in BODY_HEADERS:
            values = {v for k, v in raw if k == name}
            if len(values) > 1:
                text = f"the request has {len(values)} different {name.decode()} headers; send one"
                raise HttpError(400, text, "bad_request")
    return headers


async def read_body(
    receive: Receive,
    headers: Mapping[bytes, bytes],
    header_length: int | None,
    hold: Hold,
    *,
    limit: int,
    timeout_s: float,
) -> Buffer:
    """The whole body, refused (413) past the limit by Content-Length or, for chunked
    bodies, by counting streamed bytes; 408 when it does not arrive in time; 503 when
    ``hold`` cannot take its bytes (all of a Content-Length at once, before reading). A body in
    several pieces with a Content-Length lands in an aligned buffer, so its binary tensors
    need no copy; a body that arrives whole is used as it is."""
    declared = headers.get(b"content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise HttpError(413, _too_large(limit), "too_large")
    expected = int(declared) if declared is not None else None
    if expected is not None:
        hold.take(expected)
    buffer: memoryview | None = None
    chunks: list[bytes] = []
    size = 0
    # One timer for the whole body that cancels this task (asyncio.timeout costs several
    # times more, and this runs on every request).
    task = asyncio.current_task()
    assert task is not None
    fired: list[bool] = []
    timer = task.get_loop().call_later(timeout_s, _cancel, task, fired)
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise HttpError(400, "the client disconnected before sending the body", "aborted")
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            end = size + len(chunk)
            if end > limit or (expected is not None and end > expected):
                raise HttpError(413, _too_large(limit), "too_large")
            if expected is None:
                hold.take(len(chunk))
            if more and expected is not None and buffer is None and not chunks:
                buffer = body_buffer(expected, header_length)
            if buffer is not None:
                buffer[size:end] = chunk
            else:
                chunks.append(chunk)
            size = end
            if not more:
                break
    except asyncio.CancelledError:
        if not fired or _uncancel(task):
            raise
        text = f"the request body did not arrive within {timeout_s:g} s"
        raise HttpError(408, text, "timeout") from None
    finally:
        timer.cancel()
    if buffer is not None:
        return buffer[:size]
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _cancel(task: asyncio.Task[Any], fired: list[bool]) -> None:
    fired.append(True)
    task.cancel()


def _uncancel(task: asyncio.Task[Any]) -> int:
    """Take back our cancellation (Task.uncancel, 3.11+); the count of others still pending."""
    uncancel = getattr(task, "uncancel", None)
    return int(uncancel()) if uncancel is not None else 0


def _too_large(limit: int) -> str:
    return (
        f"the request body is larger than the limit of {limit} bytes; send less or raise --max-body"
    )


async def respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> int:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", b"%d" % len(body)),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
    return status


async def respond_json(send: Send, status: int, data: Any) -> int:
    return await respond(send, status, json.dumps(data).encode(), "application/json")


async def respond_error(
    send: Send, status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> int:
    try:
        body = json.dumps({"error": message}).encode()
        return await respond(send, status, body, "application/json", headers)
    except Exception:  # the response had started, or the client is gone
        return status
