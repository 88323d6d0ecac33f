"""The response cache of one served version: answers kept by the digest of their request.

    cache = ResponseCache(64 << 20)                    # bytes of answers it keeps
    key = cache.key({"x": x}, ("y",), "resnet/1@sha")  # blake2b of inputs, outputs, version
    cache.get(key)                                      # None: a miss
    cache.put(key, {"y": y})                            # least recently used go past the budget
    cache.hits, cache.misses, cache.bytes, len(cache)

The key digests every input tensor (name, dtype, shape and bytes, in name order), the outputs
asked for (None: all) and the model version, so two requests share an answer only when the
model would see the same thing. Answers are stored as read-only copies of the arrays that were
computed, and a hit returns them as they are: a cached answer is the computed one, bit for bit.
An answer larger than the whole budget is not kept. The executor of a version owns its cache
(``ModelConfig.cache_bytes``, never for ``deterministic = false``), so a reload or a version
swap starts with an empty one. Thread-safe (one lock); the executor calls it from its event
loop thread.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import numpy as np

ENTRY_OVERHEAD = 256
"""Bytes counted per entry beyond its arrays (key, dict and array headers)."""


class ResponseCache:
    """An LRU map from request digests to outputs, within ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.bytes = 0
        self._entries: OrderedDict[bytes, tuple[dict[str, np.ndarray], int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def key(feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None, version: str) -> bytes:
        """The digest of a request: its inputs, the outputs it asks for, the model version."""
        h = hashlib.blake2b(digest_size=32)
        h.update(f"version\0{version}\0outputs\0".encode())
        h.update(b"*" if outputs is None else "\0".join(outputs).encode() + b"\0")
        for name in sorted(feeds):
            array = feeds[name]
            h.update(f"input\0{name}\0{array.dtype.str}\0{array.shape}\0".encode())
            _digest_data(h, array)
        return h.digest()

    def get(self, key: bytes) -> dict[str, np.ndarray] | None:
        """The answer stored under ``key`` (now the most recently used), or None; counted as a
        hit or a miss."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return dict(entry[0])

    def put(self, key: bytes, outputs: Mapping[str, np.ndarray]) -> bool:
        """Keep read-only copies of ``outputs`` under ``key``, dropping the least recently used
        answers past the budget. False when the answer alone is larger than the budget."""
        kept = {name: _frozen(array) for name, array in outputs.items()}
        size = ENTRY_OVERHEAD + sum(_size(a) for a in kept.values())
        if size > self.max_bytes:
            return False
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
            self._entries[key] = (kept, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self.bytes -= dropped
                self.evictions += 1
        return True

    def clear(self) -> None:
        """Drop every answer (the counts stay)."""
        with self._lock:
            self._entries.clear()
            self.bytes = 0


def _digest_data(h: hashlib.blake2b, array: np.ndarray) -> None:
    """Feed an array's values to ``h``: its bytes, or each element of an object array (strings,
    bytes) with its length."""
    if array.dtype.kind == "O":
        for item in array.reshape(-1):
            data = item if isinstance(item, bytes) else str(item).encode()
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)
        return
    h.update(np.ascontiguousarray(array).reshape(-1).view(np.uint8).data)


def _frozen(array: np.ndarray) -> np.ndarray:
    """A read-only array that owns its data (a view into a batch's output is copied)."""
    if array.base is not None or not array.flags.c_contiguous or array.flags.writeable:
        array = np.array(array, copy=True, order="C")
    array.flags.writeable = False
    return array


def _size(array: np.ndarray) -> int:
    """Bytes an array holds, the items of an object array (strings, bytes) included."""
    if array.dtype.kind != "O":
        return int(array.nbytes)
    return int(array.nbytes) + sum(
        len(item) if isinstance(item, (bytes, str)) else 64 for item in array.reshape(-1)
    )
