"""The HTTP protocol under the app: uvicorn's httptools protocol, guarded against slow and
greedy clients, and the caps on open connections.

    caps = ConnectionCaps(total=1000, per_client=100)
    http = guarded_protocol(header_timeout_s=10.0, max_header_bytes=64 << 10, max_headers=100,
                            write_timeout_s=30.0, caps=caps)
    uvicorn.Config(app, http=http)                # as server.serve and server.running do

Each limit closes the connection after a whole JSON answer: 408 for headers that do not arrive
in time, 431 for too many or too large, 400 for an HTTP/1.1 request without one Host header
(RFC 9112; after a 431 or 400 the server reads and drops what follows for ``LINGER_S``, so
that the client reads the answer rather than a connection reset), 503 past a connection cap. A
response the client stops reading is dropped without one. A response's status line and headers
go out in the same send as its body (``HeldHead``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

log = logging.getLogger("onnxferry.serve")

LINGER_S = 2.0
"""After a 431 the server reads and drops what the client still sends for this long before it
closes, so that the client reads the answer rather than a connection reset."""


def guarded_protocol(
    *,
    header_timeout_s: float,
    max_header_bytes: int,
    max_headers: int,
    write_timeout_s: float,
    caps: ConnectionCaps,
) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with the limits uvicorn lacks: a request's headers must
    arrive within header_timeout_s of its first byte (else 408) and fit max_header_bytes and
    max_headers (else 431) and hold one Host header (else 400; HTTP/1.0 may have none); each
    way the connection closes. Bytes after a response that start no request do not stop the
    keep-alive timeout; a response the client stops reading for write_timeout_s is dropped; a
    connection past the ``caps`` (in all, or from its address) gets 503 and closes."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    timeout_s, max_bytes, max_count = header_timeout_s, max_header_bytes, max_headers

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _timer: asyncio.TimerHandle | None = None
        """The headers' deadline, or the end of the linger after a 431."""
        _header_bytes: int | None = 0
        """Bytes of the request being read while its headers are; None while its body is. A
        request that starts in the read that ends the one before is counted from the next read
        (pipelining), so it may hold up to twice the cap."""
        _header_count = 0
        _hosts = 0
        _refused = False
        _peer: str | None = None
        """The client's address while it counts against the caps."""
        _idle: asyncio.TimerHandle | None = None
        """The keep-alive timer, held while a read is parsed: only a new request stops it."""
        _stalled: asyncio.TimerHandle | None = None
        """The deadline for the client to read more of a response."""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            peer = self.client[0] if self.client else ""
            refusal = caps.admit(peer)
            if refusal is not None:
                self._turn_away(refusal)
                return
            self._peer = peer
            self._arm()

        def data_received(self, data: bytes) -> None:
            self._idle, self.timeout_keep_alive_task = self.timeout_keep_alive_task, None
            try:
                self._feed(data)
            finally:
                if self._idle is not None and self.timeout_keep_alive_task is None:
                    self.timeout_keep_alive_task = self._idle
                self._idle = None

        def _feed(self, data: bytes) -> None:
            # httptools holds a header in memory until it ends, however long it grows: it is
            # fed no more than what is left of the cap.
            while data and self._reading():
                if self._header_bytes is None:
                    super().data_received(data)
                    return
                room = max_bytes - self._header_bytes
                piece, data = (data, b"") if len(data) <= room else (data[:room], data[room:])
                self._header_bytes += len(piece)
                super().data_received(piece)
                if self._refused or self._header_bytes is None:
                    continue
                if self._header_bytes >= max_bytes:
                    self._refuse(f"request headers exceed {max_bytes} bytes")
                elif self._header_count > max_count:
                    self._refuse(f"more than {max_count} request headers")

        def on_message_begin(self) -> None:
            if self._idle is not None:
                self._idle.cancel()
                self._idle = None
            super().on_message_begin()
            self._header_count = self._hosts = 0
            if self._timer is None and not self._refused:
                self._arm()

        def on_header(self, name: bytes, value: bytes) -> None:
            self._header_count += 1
            if len(name) == 4 and name.lower() == b"host":
                self._hosts += 1
            if self._header_count <= max_count:
                super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._header_bytes = None
            if self._refused:
                return
            self._disarm()
            if self._header_count > max_count:
                self._refuse(f"more than {max_count} request headers")
                return
            host_problem = self._host_problem()
            if host_problem is not None:
                self._refuse(host_problem, b"400 Bad Request")
                return
            super().on_headers_complete()
            cycle = self.cycle
            if cycle is not None and cycle.transport is self.transport:
                # HeldHead writes through to the transport; the cycle only writes and closes
                cycle.transport = HeldHead(self.transport, cycle)  # type: ignore[assignment]

        def on_body(self, body: bytes) -> None:
            if not self._refused:
                super().on_body(body)

        def on_message_complete(self) -> None:
            self._header_bytes = 0
            if not self._refused:
                super().on_message_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._stalled is not None:
                self._stalled.cancel()
            if self._peer is not None:
                caps.release(self._peer)
                self._peer = None
            super().connection_lost(exc)

        def eof_received(self) -> None:
            if self._refused and not self.transport.is_closing():
                self.transport.close()  # a refused client read the answer and left

        def pause_writing(self) -> None:
            super().pause_writing()
            if self._stalled is None:
                self._stalled = self.loop.call_later(write_timeout_s, self._write_too_slow)

        def resume_writing(self) -> None:
            super().resume_writing()
            if self._stalled is not None:
                self._stalled.cancel()
                self._stalled = None

        def _write_too_slow(self) -> None:
            self._stalled = None
            log.warning("ferry serve: dropped a client that stopped reading its response")
            self.transport.abort()

        def _host_problem(self) -> str | None:
            """RFC 9112 3.2: an HTTP/1.1 request has exactly one Host header (with two,
            which one names the target is ambiguous); HTTP/1.0 may have none."""
            if self._hosts > 1:
                return f"{self._hosts} Host headers; send one"
            if self._hosts == 0 and self.parser.get_http_version() != "1.0":
                return "the request has no Host header; HTTP/1.1 requests need one"
            return None

        def _reading(self) -> bool:
            """Not refused, not closing, not handed over to a WebSocket protocol."""
            transport = self.transport
            return not (
                self._refused or transport.is_closing() or transport.get_protocol() is not self
            )

        def _arm(self) -> None:
            self._timer = self.loop.call_later(timeout_s, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _headers_too_slow(self) -> None:
            self._timer = None
            if not self.transport.is_closing():
                _answer(
                    self.transport, b"408 Request Timeout", "request headers did not arrive in time"
                )
                self.transport.close()

        def _turn_away(self, message: str) -> None:
            """Answer 503 on a connection past a cap and close it; it never counts."""
            self._refused = True
            _answer(self.transport, b"503 Service Unavailable", message)
            self._linger()

        def _linger(self) -> None:
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self._timer = self.loop.call_later(LINGER_S, self.transport.close)

        def _refuse(
            self, message: str, status: bytes = b"431 Request Header Fields Too Large"
        ) -> None:
            """Answer ``status`` (431) and close; read and drop what follows until then."""
            self._refused = True
            self._disarm()
            if self.pipeline or (self.cycle is not None and not self.cycle.response_complete):
                self.transport.close()  # the answer would cut into an earlier one
                return
            _answer(self.transport, status, message)
            self._linger()

    return GuardedHttpToolsProtocol


class HeldHead:
    """The transport a request's response is written through: the status line and headers
    (uvicorn writes them on ``http.response.start``) are held until the first body write and
    go out with it, one send and one packet instead of two; anything written before the
    response starts (``100 Continue``) goes out at once, and a head with no body write after
    it (HEAD, 204, 304) when the response completes or the connection closes.

    cycle.transport = HeldHead(transport, cycle)    # as the guarded protocol does per request
    """

    __slots__ = ("after", "cycle", "head", "transport", "waiting")

    def __init__(self, transport: asyncio.Transport, cycle: Any) -> None:
        self.transport = transport
        self.cycle = cycle
        self.head: bytes | None = None
        self.waiting = True
        """No head held yet: the first write once the response has started is the head."""
        self.after = cycle.on_response
        cycle.on_response = self.completed  # this cycle's own, pipelined requests included

    def completed(self) -> None:
        """The response is complete: send a head still held, then what the cycle had to do."""
        self.flush()
        self.after()

    def write(self, data: bytes) -> None:
        head = self.head
        if head is not None:
            self.head = None
            self.transport.writelines((head, data))
        elif self.waiting and self.cycle.response_started:
            self.waiting = False
            self.head = data
        else:
            self.transport.write(data)

    def flush(self) -> None:
        """Send a head still held (the response ended without a body write)."""
        head = self.head
        if head is not None:
            self.head = None
            self.transport.write(head)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class ConnectionCaps:
    """Counts open connections, in all and by client address, on one event loop:

    refusal = caps.admit("10.0.0.7")   # None: admitted, release it when it closes
    caps.release("10.0.0.7")
    """

    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self.open: dict[str, int] = {}
        self.count = 0

    def admit(self, peer: str) -> str | None:
        """Count a new connection from ``peer``; or, past a cap, why not (the address is not
        in the text)."""
        if self.count >= self.total:
            log.warning("ferry serve: refused a connection: %d open", self.count)
            return f"too many open connections (at most {self.total})"
        if self.open.get(peer, 0) >= self.per_client:
            log.warning("ferry serve: refused a connection from %s: at its cap", peer)
            return f"too many open connections from this client (at most {self.per_client})"
        self.open[peer] = self.open.get(peer, 0) + 1
        self.count += 1
        return None

    def release(self, peer: str) -> None:
        """Uncount a connection that ``admit`` counted."""
        self.count -= 1
        left = self.open[peer] - 1
        if left:
            self.open[peer] = left
        else:
            del self.open[peer]


def _answer(transport: asyncio.Transport, status: bytes, message: str) -> None:
    """Write a whole ``{"error": message}`` response that closes the connection."""
    body = json.dumps({"error": message}).encode()
    transport.write(
        b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n%s" % (status, len(body), body)
    )
