"""Compressed request bodies (Content-Encoding gzip or deflate), inflated under a size limit.

    plain = decompress(body, "gzip", limit=64 << 20)     # the whole body at once
    job = Inflater(body, "gzip", limit=64 << 20)          # or in steps:
    if not job.run(budget=256 << 10):                     # a little on the event loop
        await asyncio.to_thread(job.run)                  # the rest in a worker thread
    plain = job.result()

Both take time linear in the body, and refuse more than ``limit`` bytes of output
(BodyTooLarge, HTTP 413) and more than ``MAX_GZIP_MEMBERS`` gzip members (ProtocolError, 400).
HTTP "deflate" is the zlib format; raw deflate, which some clients send, is accepted too.
"""

from __future__ import annotations

import zlib

from .protocol import Buffer
from .tensors import ProtocolError

MAX_GZIP_MEMBERS = 64
"""A gzip body may hold this many members (clients send one); more is refused (400)."""

_INFLATE_CHUNK = 1 << 16  # body bytes per zlib call


class BodyTooLarge(ProtocolError):
    """A compressed body inflates past the size limit (HTTP 413)."""


def decompress(body: Buffer, encoding: str | None, limit: int) -> Buffer:
    """Inflate a body sent with Content-Encoding gzip or deflate, refusing more than ``limit``
    bytes of output (BodyTooLarge); identity (or no encoding) returns the body as it is. The
    whole body at once: ``Inflater`` does it in steps."""
    job = Inflater(body, encoding, limit)
    job.run()
    return job.result()


class Inflater:
    """Inflates one request body in steps, in time linear in its size.

        job = Inflater(body, "gzip", limit=64 << 20)
        if not job.run(budget=256 << 10):         # a little on the event loop
            await asyncio.to_thread(job.run)      # the rest in a worker thread
        plain = job.result()

    The constructor raises ProtocolError for an unknown encoding; ``run`` raises ProtocolError
    for data that is not valid, is truncated, trails its deflate stream or holds more than
    ``MAX_GZIP_MEMBERS`` gzip members, and BodyTooLarge past ``limit`` bytes of output.
    """

    def __init__(self, body: Buffer, encoding: str | None, limit: int) -> None:
        self.kind = (encoding or "identity").strip().lower()
        self.limit = limit
        self._view = memoryview(body).cast("B")
        self._pos = 0
        self._members = 1
        self._total = 0
        self._pieces: list[bytes] = []
        self._result: Buffer | None = None
        if self.kind == "identity":
            if len(self._view) > limit:
                raise BodyTooLarge(f"request body is larger than the {limit} byte limit")
            self._result = body
            return
        self._wbits = _wbits(self.kind, self._view)
        self._inflater = zlib.decompressobj(self._wbits)

    def run(self, budget: int | None = None) -> bool:
        """Inflate until the body is done (True), or until about ``budget`` bytes have been read
        and written (False: call again)."""
        work = 0
        while self._result is None:
            if budget is not None and work >= budget:
                return False
            room = self.limit - self._total + 1  # one byte past the limit tells it was passed
            size = _INFLATE_CHUNK
            if budget is not None:
                room = min(room, budget - work)
                size = min(size, budget - work)
            chunk = self._view[self._pos : self._pos + size]
            work += len(chunk) + self._step(chunk, room)
        return True

    def result(self) -> Buffer:
        """The inflated body, once ``run`` has returned True."""
        assert self._result is not None, "run() has not finished"
        return self._result

    def _step(self, chunk: memoryview, room: int) -> int:
        """Feed one chunk, writing at most ``room`` bytes; returns how many it wrote."""
        inflater = self._inflater
        try:
            piece = inflater.decompress(chunk, room)
        except zlib.error as e:
            raise ProtocolError(f"request body is not valid {self.kind} data ({e})") from None
        self._total += len(piece)
        if self._total > self.limit:
            raise BodyTooLarge(f"request body inflates past the {self.limit} byte limit")
        if piece:
            self._pieces.append(piece)
        if not inflater.eof:
            if not chunk and len(piece) < room:  # all input read, nothing left to write
                raise ProtocolError(f"{self.kind} request body is truncated")
            self._pos += len(chunk) - len(inflater.unconsumed_tail)
            return len(piece)
        # unused_data copies the rest of the chunk, never of the body: linear in members
        self._pos += len(chunk) - len(inflater.unused_data)
        if self._pos == len(self._view):
            pieces, self._pieces = self._pieces, []
            self._result = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        elif self.kind != "gzip":  # gzip may hold several members; zlib and raw deflate one
            raise ProtocolError(f"request body has data after its {self.kind} stream")
        elif self._members == MAX_GZIP_MEMBERS:
            raise ProtocolError(
                f"gzip request body has more than {MAX_GZIP_MEMBERS} members",
                hint="compress the body as one gzip member",
            )
        else:
            self._members += 1
            self._inflater = zlib.decompressobj(self._wbits)
        return len(piece)


def _wbits(kind: str, body: memoryview) -> int:
    """zlib's window bits for a Content-Encoding (ProtocolError for an unknown one)."""
    if kind == "gzip":
        return 16 + zlib.MAX_WBITS
    if kind == "deflate":
        # HTTP "deflate" is the zlib format; some clients send raw deflate instead.
        head = bytes(body[:2])
        is_zlib = len(head) == 2 and head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0
        return zlib.MAX_WBITS if is_zlib else -zlib.MAX_WBITS
    raise ProtocolError(
        f"unsupported Content-Encoding {kind!r}", hint="send gzip, deflate or identity"
    )
