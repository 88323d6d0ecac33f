"""Large JSON request bodies decoded in a worker process, under a memory limit.

    parser = JsonParser(memory_limit=1 << 30)
    request = parser.decode(body, None, model.signature)   # blocks: call it off the loop
    parser.close()

``json.loads`` is one C call that holds the GIL for the whole body (tens of ns a byte), so a
12 MB body decoded in a thread still stalls the event loop for the whole parse; in another
process it does not. The worker decodes one body at a time, its data segment capped
(RLIMIT_DATA) at ``memory_limit`` bytes above what it holds with the body, so parsing never
takes more than that however many large bodies arrive: a body that needs more is refused with
BodyTooLarge (413) and the worker lives on. A worker that dies (killed, out of memory) is
replaced and the body decoded once more; if that one dies too, ParserLost (503).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import re
import resource
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from ..errors import FerryError
from ..signature import Signature
from .inflate import BodyTooLarge
from .protocol import Buffer, InferRequest, decode_infer_request

INFINITY = resource.RLIM_INFINITY


class ParserLost(FerryError):
    """The parsing process died on a request twice (HTTP 503: the client may retry)."""


class JsonParser:
    """One worker process that decodes infer requests; thread-safe, started on first use."""

    def __init__(self, memory_limit: int) -> None:
        self.memory_limit = memory_limit
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None

    def decode(
        self,
        body: Buffer,
        header_length: int | None,
        signature: Signature,
        *,
        allow_nonfinite: bool = True,
    ) -> InferRequest:
        """``decode_infer_request`` in the worker: the request, or its ProtocolError."""
        data = bytes(memoryview(body).cast("B"))
        for _ in range(2):
            pool = self._worker()
            try:
                future = pool.submit(
                    _decode, data, header_length, signature, allow_nonfinite, self.memory_limit
                )
                return future.result()
            except MemoryError:  # sending the decoded arrays back took more than the limit
                raise _too_large(self.memory_limit) from None
            except BrokenProcessPool:
                self._replace(pool)
        raise ParserLost(
            "the JSON parsing process died twice on this request", hint="retry, or send binary data"
        )

    def worker_pid(self) -> int | None:
        """The worker's process id, None before the first large body."""
        pool = self._pool
        processes = list(getattr(pool, "_processes", None) or {})
        return processes[0] if processes else None

    def close(self) -> None:
        """Stop the worker; a later ``decode`` starts a new one."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _worker(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=1,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_ignore_interrupts,
                )
            return self._pool

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is broken:
                self._pool = None
        broken.shutdown(wait=False, cancel_futures=True)


def _ignore_interrupts() -> None:
    """Ctrl-C reaches the whole process group; the server, not its worker, answers it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def _memory_cap(limit: int) -> Iterator[None]:
    """Within the block, the process's data segment (heap and anonymous maps) may grow by
    ``limit`` bytes at most; past that allocations raise MemoryError."""
    status = Path("/proc/self/status")
    held = re.search(r"VmData:\s+(\d+) kB", status.read_text()) if status.exists() else None
    if held is None:  # not Linux: no VmData to place the cap above
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    cap = int(held.group(1)) * 1024 + limit
    resource.setrlimit(resource.RLIMIT_DATA, (cap if hard == INFINITY else min(cap, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def _decode(
    data: bytes, header_length: int | None, signature: Signature, allow_nonfinite: bool, limit: int
) -> InferRequest:
    try:
        with _memory_cap(limit):
            return decode_infer_request(
                data, header_length, signature, allow_nonfinite=allow_nonfinite
            )
    except MemoryError:
        raise _too_large(limit) from None


def _too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(
        f"the request's JSON needs more than the {limit >> 20} MiB the server gives to "
        "parsing one body",
        hint="send the tensors as binary data (Inference-Header-Content-Length)",
    )
