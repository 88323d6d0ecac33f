"""Triton's system shared memory extension: tensors passed by region, not in the request body.

    regions = SharedMemory(enabled=True)                     # ferry serve --shared-memory system
    regions.register("in0", "/ferry-doc-input", offset=0, byte_size=48)  # /dev/shm/ferry-doc-input
    regions.status()         # [{"name": "in0", "key": "/ferry-doc-input", "offset": 0, ...}]
    ref = region_ref("input", "x", {"shared_memory_region": "in0",
                                    "shared_memory_byte_size": 48})
    view = regions.read("x", ref)                            # a memoryview of the mapped bytes
    del view
    regions.unregister("in0")                                # None: every region

A client on the same host creates a POSIX shared memory object (``shm_open``: a file under
/dev/shm; tritonclient.utils.shared_memory does it), writes its inputs there, registers the
region (``POST /v2/systemsharedmemory/region/{name}/register`` with ``key``, ``offset`` and
``byte_size``), and names the region in an input's or output's parameters
(``shared_memory_region``, ``shared_memory_offset``, ``shared_memory_byte_size``). Inputs are
read as numpy views of the mapping (no copy); outputs are written into their region and the
response lists them without data.

Off by default (``ServeSettings.shared_memory``): a client that can register a region makes
the server map a file of its choosing and write outputs into it, so it is for a trusted client
on the same host. Keys must name a file directly under /dev/shm (no ``/`` past the leading
one, no ``..``), registration needs the API keys like inference, and every offset and size is
checked against the region and the file, the file's size again at each use (a client that
creates the key again, smaller, gets a 400, not a server killed by SIGBUS). Only a client
that shrinks the file while a request is using its bytes can still stop the server; that is
why the extension is for trusted clients. Errors are ProtocolError (HTTP 400).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .tensors import ProtocolError

SHM_ROOT = Path("/dev/shm")
MAX_NAME = 256
ENABLE_HINT = "start the server with `ferry serve --shared-memory system`"


@dataclass(frozen=True)
class RegionRef:
    """Where an input's or output's bytes lie: a registered region, an offset in it, a size."""

    region: str
    offset: int
    byte_size: int


def region_ref(kind: str, name: str, params: dict[str, Any]) -> RegionRef | None:
    """The shared memory reference in a tensor's ``parameters`` (``kind`` is "input" or
    "output"), None when it has none; ProtocolError when it is malformed."""
    region = params.get("shared_memory_region")
    if region is None:
        return None
    if type(region) is not str or not region:
        raise ProtocolError(f"{kind} {name!r} shared_memory_region must be a region name")
    size = params.get("shared_memory_byte_size")
    offset = params.get("shared_memory_offset", 0)
    for label, value in (("shared_memory_byte_size", size), ("shared_memory_offset", offset)):
        if type(value) is not int or value < 0:
            raise ProtocolError(f"{kind} {name!r} {label} must be a non-negative integer")
    assert isinstance(size, int) and isinstance(offset, int)
    return RegionRef(region, offset, size)


@dataclass
class _Region:
    name: str
    key: str
    offset: int
    byte_size: int
    mapping: mmap.mmap

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "key": self.key, "offset": self.offset,
                "byte_size": self.byte_size}  # fmt: skip


class SharedMemory:
    """The registered regions of one server (see the module docstring); safe across threads
    (outputs are written in worker threads)."""

    def __init__(self, enabled: bool, root: Path = SHM_ROOT) -> None:
        self.enabled = enabled
        self.root = root
        self._regions: dict[str, _Region] = {}
        self._lock = threading.Lock()

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        """Map ``byte_size`` bytes at ``offset`` of the shared memory object ``key``."""
        self._check_on()
        if not name or len(name) > MAX_NAME:
            raise ProtocolError(f"a region name must have 1 to {MAX_NAME} characters")
        path = self._path(key)
        for label, value in (("offset", offset), ("byte_size", byte_size)):
            if type(value) is not int or value < 0:
                raise ProtocolError(f"register needs {label} as a non-negative integer")
        try:
            fd = os.open(path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
        except OSError as e:
            raise ProtocolError(
                f"cannot open shared memory key {key!r} ({e.strerror})",
                hint="create it first (tritonclient.utils.shared_memory."
                "create_shared_memory_region)",
            ) from None
        try:
            size = os.fstat(fd).st_size
            if byte_size == 0 or offset + byte_size > size:
                raise ProtocolError(
                    f"shared memory key {key!r} has {size} bytes; offset {offset} + byte_size "
                    f"{byte_size} does not fit in it",
                    hint="register a non-empty part of the object",
                )
            mapping = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        with self._lock:
            if name in self._regions:
                mapping.close()
                raise ProtocolError(
                    f"shared memory region {name!r} is already registered",
                    hint="unregister it first, or use another name",
                )
            self._regions[name] = _Region(name, key, offset, byte_size, mapping)

    def unregister(self, name: str | None = None) -> None:
        """Forget a region (None: all of them); an unknown name is no error, as in Triton.
        A region that a running request still reads is unmapped once the request is done."""
        self._check_on()
        with self._lock:
            names = list(self._regions) if name is None else [name]
            gone = [self._regions.pop(n) for n in names if n in self._regions]
        for region in gone:
            _close(region.mapping)

    def status(self, name: str | None = None) -> list[dict[str, Any]]:
        """Triton's status list: name, key, offset and byte_size of each region (or of one)."""
        self._check_on()
        with self._lock:
            if name is None:
                return [region.status() for region in self._regions.values()]
            return [self._get(name, "status").status()]

    def read(self, tensor: str, ref: RegionRef) -> memoryview:
        """The bytes of input ``tensor`` in its region (a view of the mapping)."""
        return self._window(f"input {tensor!r}", ref)

    def write(self, tensor: str, ref: RegionRef, payload: memoryview) -> None:
        """Copy output ``tensor``'s bytes into its region; ProtocolError when they do not fit."""
        window = self._window(f"output {tensor!r}", ref)
        if payload.nbytes > window.nbytes:
            raise ProtocolError(
                f"output {tensor!r} has {payload.nbytes} bytes but its shared memory region "
                f"{ref.region!r} gives it {window.nbytes}",
                hint="give the output a larger shared_memory_byte_size",
            )
        window[: payload.nbytes] = payload.cast("B")

    def close(self) -> None:
        """Unmap every region (at shutdown)."""
        with self._lock:
            regions, self._regions = list(self._regions.values()), {}
        for region in regions:
            _close(region.mapping)

    def _window(self, what: str, ref: RegionRef) -> memoryview:
        if not self.enabled:
            raise ProtocolError(
                f"{what} names shared memory region {ref.region!r} but system shared memory is "
                "off on this server",
                hint=f"send the data in the request body, or {ENABLE_HINT}",
            )
        with self._lock:  # the view is made before an unregister can close the mapping
            region = self._get(ref.region, what)
            if ref.offset + ref.byte_size > region.byte_size:
                raise ProtocolError(
                    f"{what}: shared_memory_offset {ref.offset} + shared_memory_byte_size "
                    f"{ref.byte_size} is past the end of region {ref.region!r} "
                    f"({region.byte_size} bytes)"
                )
            # Touching a page past the end of a file the client shrank (or created again,
            # smaller, under the same key) would kill the server with SIGBUS.
            size, needed = region.mapping.size(), region.offset + region.byte_size
            if size < needed:
                raise ProtocolError(
                    f"{what}: shared memory key {region.key!r} has shrunk to {size} bytes since "
                    f"region {ref.region!r} was registered on {needed} of them",
                    hint="unregister the region and register it again",
                )
            start = region.offset + ref.offset
            return memoryview(region.mapping)[start : start + ref.byte_size]

    def _get(self, name: str, what: str) -> _Region:
        region = self._regions.get(name)
        if region is None:
            raise ProtocolError(
                f"{what}: no shared memory region {name[:MAX_NAME]!r} is registered",
                hint="register it first (POST /v2/systemsharedmemory/region/NAME/register)",
            )
        return region

    def _path(self, key: Any) -> Path:
        """The file under the root a key names; ProtocolError for anything else."""
        if type(key) is not str:
            raise ProtocolError("register needs 'key', the shared memory object's name")
        bare = key[1:] if key.startswith("/") else key
        if not bare or "/" in bare or bare in (".", "..") or "\0" in bare or len(bare) > 255:
            raise ProtocolError(
                f"shared memory key {key[:MAX_NAME]!r} must name one object under {self.root}",
                hint="a key like '/input0': no other '/', no '..'",
            )
        return self.root / bare

    def _check_on(self) -> None:
        if not self.enabled:
            raise ProtocolError("system shared memory is off on this server", hint=ENABLE_HINT)


def _close(mapping: mmap.mmap) -> None:
    # BufferError: a request still views it; the mapping closes when its last view is gone
    with contextlib.suppress(BufferError):
        mapping.close()
