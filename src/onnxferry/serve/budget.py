"""A repository's memory budget: idle models are unloaded, least recently used first, when
loading another would pass it, and reloaded on their next request.

    budget = MemoryBudget(2 << 30)        # memory_budget = "2GiB" in the repository's ferry.toml
    budget.track(executor)                # a version was loaded: unload idle ones past the budget
    await budget.wake(executor, deadline) # a request for an unloaded one: reload it and wait
    budget.used()                         # bytes the loaded versions hold
    resident_bytes()                      # this process's resident memory now

What is unloaded is a version's ONNX Runtime sessions, which hold its weights, prepacked
kernels and arena: the version keeps serving (its metadata, config, statistics, readiness and
response cache answer), and its executor's next request reloads the sessions in a worker
thread. That request waits; a deadline that passes first answers DeadlineExceeded (504) while
the reload goes on for the next one. Requests that arrive meanwhile share the reload. The model
source a reload reads is the one the first load read: the model file (which must still hash to
the served digest, else ModelNotReady: the hot reload picks the new files up) or, for a
verified signed model, the bytes in memory. The parsed model (its graph, and its weights when
they are inside the .onnx file) stays held, so that it can be.

Memory is measured when a version loads: the growth of the process's resident memory (RSS,
``/proc/self/statm``) over creating its sessions and its warm-up run, with freed heap memory
returned to the system (glibc ``malloc_trim``) before and after, so that the figure is what the
sessions keep. ONNX Runtime's Python API does not expose its arena's statistics. Other work in
the process at that moment (requests to other models) adds noise; the first session of a
process also carries ONNX Runtime's one-time setup (about 10 MiB). A version with requests
queued or running, or waiting for its own reload, is never unloaded; when only such versions
are left, the budget is exceeded for the while, with a warning in the log.

Arena settings (``arena``, ``arena_extend_strategy`` in a model's ferry.toml) become session
options here (``arena_options``): ``arena = false`` turns the CPU arena off (freed run memory
goes back at once); ``same_as_requested`` puts the model's sessions on the process's shared
CPU arena, registered once with ONNX Runtime's kSameAsRequested strategy (its memory is not
returned when a model is unloaded).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import logging
import os
import threading
import time
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..report import human_size
from .config import ModelConfig

if TYPE_CHECKING:
    from .executor import ModelExecutor

log = logging.getLogger("onnxferry.serve")

UNLOADED = "UNLOADED"
"""A served version whose sessions the budget unloaded (the repository index's state)."""
UNLOADED_REASON = "unloaded to stay within the memory budget; the next request reloads it"
MEMORY_METHOD = "rss_delta"
"""How a version's memory is measured (see the module docstring)."""


class MemoryBudget:
    """The loaded versions of a repository within ``limit`` bytes; see the module docstring.

    Loop-thread calls, like the executors it watches.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.unloads = 0
        self.reloads = 0
        self._executors: weakref.WeakSet[ModelExecutor] = weakref.WeakSet()
        self._reloading: dict[int, asyncio.Task[None]] = {}

    def used(self) -> int:
        """Bytes the loaded versions hold, as measured when each was loaded."""
        return sum(e.memory_bytes for e in self._live() if e.loaded)

    def track(self, executor: ModelExecutor) -> list[ModelExecutor]:
        """Watch a version that has just loaded, and unload idle others (least recently used
        first) until the loaded ones fit; returns those unloaded."""
        executor.budget = self
        self._executors.add(executor)
        return self._make_room(executor)

    async def wake(self, executor: ModelExecutor, deadline: float | None) -> None:
        """Reload an unloaded version's sessions (shared by every request that waits for them),
        making room first. DeadlineExceeded when ``deadline`` (``time.monotonic()``) passes
        before it is done; the reload still finishes for the next request. ModelNotReady
        when it fails."""
        from .executor import DeadlineExceeded

        if executor.loaded:
            return
        task = self._reloading.get(id(executor))
        if task is None:
            self._make_room(executor)
            task = asyncio.create_task(self._reload(executor))
            self._reloading[id(executor)] = task
            task.add_done_callback(functools.partial(self._reloaded, id(executor)))
        remaining = None if deadline is None else deadline - time.monotonic()
        try:
            if remaining is not None and remaining <= 0:
                raise TimeoutError
            await asyncio.wait_for(asyncio.shield(task), remaining)
        except (TimeoutError, asyncio.TimeoutError):
            raise DeadlineExceeded(
                f"model {executor.name!r} was unloaded to stay within the memory budget, and "
                "reloading it took past the request deadline",
                hint="retry: it goes on loading; raise the memory budget or the timeout",
            ) from None

    # --- inside --------------------------------------------------------------------------

    def _live(self) -> list[ModelExecutor]:
        return [e for e in self._executors if not e.closed]

    def _make_room(self, keep: ModelExecutor) -> list[ModelExecutor]:
        """Unload idle versions but ``keep``, least recently used first, until the loaded ones
        and ``keep`` fit."""
        live = self._live()
        used = sum(e.memory_bytes for e in live if e.loaded and e is not keep)
        used += keep.memory_bytes
        unloaded: list[ModelExecutor] = []
        idle = sorted(
            (e for e in live if e is not keep and e.loaded and e.idle), key=lambda e: e.last_used
        )
        for executor in idle:
            if used <= self.limit:
                break
            if executor.unload_sessions():
                used -= executor.memory_bytes
                unloaded.append(executor)
                self.unloads += 1
                log.info(
                    "model %s version %s unloaded (%s) to stay within the memory budget of %s",
                    executor.name,
                    executor.version,
                    human_size(executor.memory_bytes),
                    human_size(self.limit),
                )
        if used > self.limit:
            log.warning(
                "model %s version %s: the loaded models hold %s, over the memory budget of %s, "
                "and none of the others is idle",
                keep.name,
                keep.version,
                human_size(used),
                human_size(self.limit),
            )
        return unloaded

    async def _reload(self, executor: ModelExecutor) -> None:
        try:
            await asyncio.to_thread(_restore, executor)
        except Exception as e:
            from .catalog import ModelNotReady

            raise ModelNotReady(
                f"model {executor.name!r} version {executor.version} was unloaded to stay "
                f"within the memory budget and cannot be reloaded: {e}",
                hint="retry; the repository reloads changed files by itself",
            ) from e
        self.reloads += 1
        log.info("model %s version %s reloaded", executor.name, executor.version)

    def _reloaded(self, key: int, task: asyncio.Task[None]) -> None:
        self._reloading.pop(key, None)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            log.warning("%s", error)


def _restore(executor: ModelExecutor) -> None:
    """Recreate the sessions of an unloaded version from the source its first load read
    (worker thread)."""
    from ..model import Model

    model = executor.model
    if model.path is not None and model.path.is_file():
        fresh = Model(model.proto, model.path, model.external_files)
        if fresh.digest != model.digest:
            raise RuntimeError(f"{model.path.name} changed since it was loaded")
    executor.restore_sessions()


# --- memory --------------------------------------------------------------------------------


@functools.cache
def _malloc_trim() -> Any:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def resident_bytes(*, trim: bool = False) -> int:
    """This process's resident memory in bytes (Linux; 0 elsewhere). ``trim``: first return
    freed heap memory to the system (glibc), so the figure counts memory in use."""
    if trim:
        release_free_memory()
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def release_free_memory() -> None:
    """Give freed heap memory back to the system (glibc ``malloc_trim``; nothing elsewhere)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


# --- arena settings ------------------------------------------------------------------------

_shared_arena = threading.Lock()
_shared_arena_registered = False


def arena_options(config: ModelConfig, entries: Mapping[str, str]) -> dict[str, Any]:
    """``runtime.SessionConfig`` fields for a model's arena settings: ``cpu_arena`` and the
    session config ``entries`` (with ``session.use_env_allocators`` for the shared
    same-as-requested arena, registered on first use)."""
    entries = dict(entries)
    if config.arena and config.arena_extend_strategy == "same_as_requested":
        _register_shared_arena()
        entries["session.use_env_allocators"] = "1"
    return {"cpu_arena": config.arena, "entries": entries}


def _register_shared_arena() -> None:
    """The process's shared CPU arena with kSameAsRequested (once)."""
    global _shared_arena_registered
    with _shared_arena:
        if _shared_arena_registered:
            return
        import onnxruntime as ort

        info = ort.OrtMemoryInfo(
            "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
        )
        ort.create_and_register_allocator(info, ort.OrtArenaCfg({"arena_extend_strategy": 1}))
        _shared_arena_registered = True
