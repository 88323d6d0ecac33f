"""The models a server serves: one .onnx file or a Triton-layout repository, hot-reloaded.

    repo = Repository.open(Path("models/"), poll_interval_s=2.0)
    await repo.start()                       # load everything; failures are recorded, not raised
    mv = repo.get("resnet")                  # highest ready version (ModelVersion)
    result = await mv.executor.infer(feeds)
    repo.index()                             # [{"name", "version", "state", "reason"}, ...]
    repo.unready()                           # {name: reason} of models serving no version
    await repo.stop()                        # stop polling, drain and close every executor

What ``open`` accepts:

- a ``.onnx`` file: one model named after the file's stem, version "1", served with the
  ``config`` argument (no ``ferry.toml`` is read);
- a directory: a Triton-layout repository ``REPO/<name>/<version>/model.onnx`` (or the version
  directory's only ``*.onnx`` file), versions being positive integer directory names, with an
  optional ``REPO/<name>/ferry.toml`` (else the ``config`` argument) whose ``[versions]`` policy
  picks the versions to serve. Hidden entries, files at the top level and non-integer version
  directories are ignored (logged at debug). An empty directory is a valid, empty repository.
  A directory holding ``.onnx`` files or integer directories directly is a model, not a
  repository, and is refused with a hint.

Loading: ``Model.load`` (the safe loader), a ``ModelExecutor``, one warmup run, all in a worker
thread. A version that fails is recorded with a one-line reason (``index()``; ``get`` raises
ModelNotReady with it); the other models and versions serve. Reasons name paths relative to
the repository (``<name>/<version>/model.onnx``); the log has the full paths. Under a
``latest`` policy a failed version does not count, so the next lower version that loads serves
instead.

Hot reload (``poll_once``, every ``poll_interval_s`` after ``start``): the disk is scanned;
a version is fingerprinted by (path, size, mtime_ns, inode) of the non-hidden files in its
directory (breadth first, at most ``MAX_VERSION_ENTRIES`` entries read, links to directories
not followed; past that the index says so, and its ``model.onnx`` and the served model's
external data files are still watched), ``ferry.toml`` likewise. A version directory that is a
link to a place outside the repository and its model directory is refused, with a reason in
the index. A change is acted on only when the fingerprint is the same
on two consecutive scans, so a file still being copied is not loaded half-written. A changed
file whose content hash equals the served model's digest is not reloaded. New or changed
versions are loaded and warmed up while the old ones keep serving, then the model's version map
is replaced in one assignment; executors no longer served are closed in the background, which
lets their queued and in-flight requests finish. A failing new version leaves the old one
serving, is logged at warning level and shows in ``index()``. So does a new version whose
signature differs (``signature_changes``: inputs added, removed, or of another dtype, rank or
fixed dim; outputs removed) from the version it would take over from (the same number, or the
highest served one when it is above it), unless its ``ferry.toml`` sets
``allow_signature_change = true``; once nothing it differs from serves, it loads. A removed
version directory is
unloaded (drained); a removed model directory disappears. A changed ``ferry.toml`` rebuilds the
executors with the new settings; a bad one keeps the old settings and is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..data import load_feeds
from ..errors import FerryError, InputError, ModelLoadError, UsageError, one_line
from ..model import Model, resolve_model_path
from ..signature import Signature, TensorSpec
from .config import ModelConfig
from .executor import ModelExecutor
from .scan import (
    NEVER,
    Disk,
    Fingerprint,
    Stamp,
    check_repository_dir,
    scan,
    version_number,
)

log = logging.getLogger("onnxferry.serve")

T = TypeVar("T")

READY = "READY"
UNAVAILABLE = "UNAVAILABLE"
LOADING = "LOADING"


class ModelNotFound(InputError):
    """No model by that name, or no such version of it (HTTP 404)."""


class ModelNotReady(FerryError):
    """The model or version exists but cannot serve now: it failed to load, or was unloaded
    (HTTP 503)."""


@dataclass(frozen=True, eq=False)
class ModelVersion:
    """One served version: the loaded model, its settings and the executor running it.
    Compared and hashed by identity: a reload makes a new one."""

    name: str
    version: str
    model: Model
    config: ModelConfig
    executor: ModelExecutor


@dataclass
class _Version:
    """What is known about one version on disk."""

    path: Path  # the version directory, or the model file of a single-file repository
    fingerprint: Fingerprint = ()
    stable: bool = False  # same fingerprint on the last two scans
    tried: Fingerprint | None = None  # the fingerprint at the last load attempt
    error: str | None = None  # why the attempt at ``tried`` failed
    waiting: bool = False  # changed, and the last scan found it still changing
    loading: bool = False
    refused: bool = False  # the failure at ``tried`` was a signature change
    blocked: str | None = None  # why the scan refused the directory itself
    note: str = ""  # what the scan could not watch


@dataclass
class _Entry:
    """What is known about one model name."""

    name: str
    root: Path | None  # REPO/<name>; None for a single file
    config: ModelConfig | None = None  # the settings in use; None until a valid one was read
    config_stamp: Stamp | None = NEVER  # ferry.toml as last scanned (None: absent)
    config_stable: bool = False
    config_tried: Stamp | None = NEVER
    config_error: str | None = None
    versions: dict[int, _Version] = field(default_factory=dict)
    unloaded: bool = False


class SignatureChanged(FerryError):
    """A new version's signature differs from that of the version it would take over from
    (``signature_changes``), and its ``ferry.toml`` does not set ``allow_signature_change``."""


class _WarmupFailed(Exception):
    def __init__(self, executor: ModelExecutor, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.executor = executor
        self.cause = cause


class Repository:
    """Models by name and version, loaded safely and hot-reloaded; see the module docstring."""

    def __init__(
        self,
        path: Path,
        *,
        single: bool,
        poll_interval_s: float | None = None,
        config: ModelConfig | None = None,
    ) -> None:
        """Use ``Repository.open``, which checks the path."""
        self.path = path
        self.single = single
        self.poll_interval_s = poll_interval_s
        self.default_config = config or ModelConfig()
        self._entries: dict[str, _Entry] = {}
        self._serving: dict[str, dict[str, ModelVersion]] = {}
        self._lock = asyncio.Lock()
        self._poll_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._started = False
        self._stopping = False
        base = path.parent if single else path
        self._roots = sorted({str(base.absolute()), str(base.resolve())}, key=len, reverse=True)

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        poll_interval_s: float | None = None,
        config: ModelConfig | None = None,
    ) -> Repository:
        """A repository for ``path`` (a ``.onnx`` file or a repository directory); nothing is
        loaded until ``start``. InputError when the path is neither."""
        path = Path(path)
        if poll_interval_s is not None and not poll_interval_s > 0:
            raise UsageError(f"poll interval must be > 0 seconds, got {poll_interval_s}")
        if path.is_file():
            if path.suffix.lower() != ".onnx":
                raise InputError(
                    f"{path} is neither an .onnx model nor a model repository directory",
                    hint="pass a model.onnx file or a directory laid out as <name>/<version>/"
                    "model.onnx",
                )
            return cls(path, single=True, poll_interval_s=poll_interval_s, config=config)
        if not path.is_dir():
            raise InputError(f"{path}: no such file or directory", hint="check the path")
        check_repository_dir(path)
        return cls(path, single=False, poll_interval_s=poll_interval_s, config=config)

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Load every model (failures are recorded with their reason, the others serve), then
        poll for changes every ``poll_interval_s`` seconds if set."""
        if self._started:
            return
        self._stopping = False
        await self._exclusive(lambda: self._sync(wait=False, retry=False))
        self._started = True
        if self.poll_interval_s is not None:
            self._poll_task = asyncio.create_task(self._poll_loop(self.poll_interval_s))

    async def stop(self) -> None:
        """Stop polling and close every executor, letting queued and in-flight requests
        finish."""
        self._stopping = True
        async with self._lock:
            if self._poll_task is not None:
                self._poll_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._poll_task
                self._poll_task = None
            serving, self._serving = self._serving, {}
            for versions in serving.values():
                for mv in versions.values():
                    self._close_later(mv.executor)
            self._started = False
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def _poll_loop(self, interval: float) -> None:
        while not self._stopping:
            await asyncio.sleep(interval)
            if self._stopping:
                return
            try:
                await self.poll_once()
            except Exception:  # a poll must never end the loop
                log.exception("model repository poll failed; retrying in %gs", interval)

    async def poll_once(self) -> list[str]:
        """Scan the disk once and apply what changed and has been stable since the previous
        scan. Returns the changes: "m/2 loaded", "m/2 failed", "m/1 unloaded", "m removed",
        "m config changed", "m config failed"."""
        return await self._exclusive(lambda: self._sync(wait=True, retry=False))

    @property
    def running(self) -> bool:
        """Between the end of ``start`` and the beginning of ``stop``."""
        return self._started and not self._stopping

    # --- serving -----------------------------------------------------------------------------

    def get(self, name: str, version: str | None = None) -> ModelVersion:
        """The ready ``version`` of model ``name``; with None its highest ready version.

        ModelNotFound for an unknown model, a version not on disk or one the version policy
        does not serve; ModelNotReady (with the reason) for one that failed or was unloaded.
        """
        if self._stopping:
            raise ModelNotReady("the model repository is stopping")
        entry = self._entries.get(name)
        if entry is None:
            raise ModelNotFound(f"unknown model {name!r}", hint=self._known_hint())
        serving = self._serving.get(name, {})
        if version is None:
            if serving:
                return serving[max(serving, key=int)]
            raise ModelNotReady(f"model {name!r} is not ready: {self._model_reason(entry)}")
        number = version_number(version)
        mv = serving.get(str(number)) if number is not None else None
        if mv is not None:
            return mv
        if number is None or number not in entry.versions:
            on_disk = ", ".join(str(n) for n in sorted(entry.versions)) or "none"
            raise ModelNotFound(
                f"model {name!r} has no version {version!r}", hint=f"versions on disk: {on_disk}"
            )
        state, reason = self._version_state(entry, number)
        if reason == _NOT_SELECTED:
            raise ModelNotFound(
                f"model {name!r} version {number} is not served: {reason}",
                hint=f"served versions: {', '.join(sorted(serving, key=int)) or 'none'}",
            )
        raise ModelNotReady(f"model {name!r} version {number} is not ready: {reason}")

    def versions(self, name: str) -> list[str]:
        """The ready versions of ``name``, ascending (ModelNotFound for an unknown model)."""
        if name not in self._entries:
            raise ModelNotFound(f"unknown model {name!r}", hint=self._known_hint())
        return sorted(self._serving.get(name, {}), key=int)

    def names(self) -> list[str]:
        """Every model name known on disk, sorted."""
        return sorted(self._entries)

    def serving(self) -> list[ModelVersion]:
        """Every ready version of every model, by name then version."""
        return [
            mv
            for name in sorted(self._serving)
            for _, mv in sorted(self._serving[name].items(), key=lambda kv: int(kv[0]))
        ]

    def unready(self) -> dict[str, str]:
        """The models that should serve (all but unloaded ones) but serve no version, each with
        the reason; empty when the repository is ready. Versions the policy does not select,
        and a failed new version while an older one serves, do not count."""
        return {
            name: self._model_reason(entry)
            for name, entry in sorted(self._entries.items())
            if not entry.unloaded and not self._serving.get(name)
        }

    def index(self) -> list[dict[str, Any]]:
        """Triton's repository index: {"name", "version", "state", "reason"} for every version
        on disk (state READY, LOADING or UNAVAILABLE; reason "" when ready and healthy). A model
        without version directories has one row with version "".
        """
        rows: list[dict[str, Any]] = []
        for name in sorted(self._entries):
            entry = self._entries[name]
            if not entry.versions:
                reason = self._model_reason(entry)
                rows.append({"name": name, "version": "", "state": UNAVAILABLE, "reason": reason})
            for number in sorted(entry.versions):
                state, reason = self._version_state(entry, number)
                rows.append(
                    {"name": name, "version": str(number), "state": state, "reason": reason}
                )
        return rows

    # --- repository API ----------------------------------------------------------------------

    async def load(self, name: str) -> None:
        """(Re)read model ``name`` from disk now: its ``ferry.toml``, new and changed versions,
        and versions that failed before. ModelNotFound when it is not on disk; ModelLoadError
        with the reason when its settings or a version fail (the old version keeps serving)."""
        await self._exclusive(lambda: self._load(name))

    async def unload(self, name: str) -> None:
        """Stop serving every version of ``name`` (drained) until ``load(name)``; polling leaves
        it unloaded. ModelNotFound for an unknown model."""
        await self._exclusive(lambda: self._unload(name))

    async def _load(self, name: str) -> None:
        disk = await asyncio.to_thread(self._scan)
        if name not in disk:
            raise ModelNotFound(f"unknown model {name!r}", hint=self._known_hint())
        entry = self._entries.get(name) or self._new_entry(name)
        self._entries[name] = entry
        entry.unloaded = False
        self._observe(entry, disk[name])
        failed: list[tuple[int, str]] = []
        await self._sync_model(entry, wait=False, retry=True, failed=failed)
        if entry.config_error is not None:
            raise ModelLoadError(f"model {name!r}: {entry.config_error}")
        if failed:
            number, reason = max(failed)
            raise ModelLoadError(f"model {name!r} version {number} failed to load: {reason}")
        if not self._serving.get(name):
            raise ModelLoadError(f"model {name!r} is not ready: {self._model_reason(entry)}")

    async def _unload(self, name: str) -> None:
        entry = self._entries.get(name)
        if entry is None:
            raise ModelNotFound(f"unknown model {name!r}", hint=self._known_hint())
        entry.unloaded = True
        old = self._serving.pop(name, {})
        for mv in old.values():
            log.info("model %s version %s unloaded", name, mv.version)
        await asyncio.gather(*(mv.executor.close() for mv in old.values()))

    # --- scanning and reconciling ------------------------------------------------------------

    async def _exclusive(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run ``work`` holding the lock, in its own task so that a cancelled caller (a client
        that went away) does not abandon a load half-way."""

        async def locked() -> T:
            async with self._lock:
                if self._stopping:
                    raise ModelNotReady("the model repository is stopping")
                return await work()

        task = asyncio.create_task(locked())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_consume)
        return await asyncio.shield(task)

    async def _sync(self, *, wait: bool, retry: bool) -> list[str]:
        """Bring every model in line with the disk."""
        disk = await asyncio.to_thread(self._scan)
        changes: list[str] = []
        for name in sorted(set(self._entries) - set(disk)):
            del self._entries[name]
            for mv in self._serving.pop(name, {}).values():
                self._close_later(mv.executor)
            log.info("model %s removed from the repository", name)
            changes.append(f"{name} removed")
        for name in sorted(disk):
            entry = self._entries.get(name) or self._new_entry(name)
            self._entries[name] = entry
            self._observe(entry, disk[name])
            if entry.unloaded:
                continue
            changes += await self._sync_model(entry, wait=wait, retry=retry)
        return changes

    def _new_entry(self, name: str) -> _Entry:
        if self.single:
            return _Entry(name, None, self.default_config, config_stamp=None, config_tried=None)
        return _Entry(name, self.path / name)

    def _observe(self, entry: _Entry, disk: Disk) -> None:
        """Record a scan: fingerprints, whether they held still since the last scan, and
        versions that appeared or went away."""
        entry.config_stable = disk.config_stamp == entry.config_stamp
        entry.config_stamp = disk.config_stamp
        for number in set(entry.versions) - set(disk.versions):
            del entry.versions[number]
        for number, seen in disk.versions.items():
            known = entry.versions.get(number)
            if known is None or known.path != seen.path:
                known = entry.versions[number] = _Version(seen.path)
            if seen.blocked and not known.blocked:
                log.warning(
                    "model %s version %s: %s (%s -> %s)",
                    entry.name,
                    number,
                    seen.blocked,
                    seen.path,
                    seen.path.resolve(),
                )
            known.stable = seen.fingerprint == known.fingerprint
            known.fingerprint = seen.fingerprint
            known.blocked, known.note = seen.blocked, seen.note

    async def _sync_model(
        self,
        entry: _Entry,
        *,
        wait: bool,
        retry: bool,
        failed: list[tuple[int, str]] | None = None,
    ) -> list[str]:
        """Apply settings and version changes of one model; swap its version map once.

        ``wait``: act only on files unchanged since the previous scan. ``retry``: load again
        versions that failed with the files they have now. Failures go to ``failed``.
        """
        name = entry.name
        changes = await self._sync_config(entry, wait=wait, retry=retry)
        for state in entry.versions.values():
            state.waiting = (
                wait and not state.stable and bool(state.fingerprint)
            ) and state.tried != state.fingerprint
        old = self._serving.get(name, {})
        if entry.config is None:
            ready: dict[int, ModelVersion] = {}
            selected: list[int] = []
            built: list[ModelVersion] = []
        else:
            policy = entry.config.version_policy
            ready = {int(v): mv for v, mv in old.items() if int(v) in entry.versions}
            before = dict(ready)
            attempted: set[int] = set()
            built = []

            def needs_load(number: int) -> bool:
                state = entry.versions[number]
                if number in attempted or not state.fingerprint or (wait and not state.stable):
                    return False
                if number in ready:
                    return state.tried != state.fingerprint
                changed = state.tried != state.fingerprint or state.error is None or retry
                return changed or (state.refused and not before)  # nothing left to differ from

            while True:
                candidates = [n for n in entry.versions if n in ready or needs_load(n)]
                selected = candidates if self.single else policy.select(candidates)
                todo = [n for n in selected if needs_load(n)]
                if not todo:
                    break
                for number in sorted(todo, reverse=True):
                    attempted.add(number)
                    result = await self._attempt(
                        entry, number, ready.get(number), _predecessor(before, number)
                    )
                    if isinstance(result, str):
                        changes.append(f"{name}/{number} failed")
                        if failed is not None:
                            failed.append((number, result))
                    elif result is not ready.get(number):
                        built.append(result)
                        ready[number] = result
                        changes.append(f"{name}/{number} loaded")
        new = {str(n): ready[n] for n in sorted(selected)}
        if not new:
            self._serving.pop(name, None)
        elif new.keys() != old.keys() or any(new[v] is not old[v] for v in new):
            self._serving[name] = new  # the swap: one assignment
        keep = {id(mv) for mv in new.values()}
        for mv in [*old.values(), *built]:
            if id(mv) not in keep:
                self._close_later(mv.executor)
                if mv.version not in new:
                    log.info("model %s version %s unloaded", name, mv.version)
                    changes.append(f"{name}/{mv.version} unloaded")
        return changes

    async def _sync_config(self, entry: _Entry, *, wait: bool, retry: bool) -> list[str]:
        """Read a new or changed ``ferry.toml`` (stable, or ``wait`` off). A valid change resets
        every version so they are rebuilt with it; a bad one keeps the settings in use."""
        if entry.root is None:
            return []
        unchanged = entry.config_stamp == entry.config_tried
        if (unchanged and not (retry and entry.config_error)) or (wait and not entry.config_stable):
            return []
        entry.config_tried = entry.config_stamp
        file = entry.root / "ferry.toml"
        try:
            if entry.config_stamp is None:
                config = self.default_config
            else:
                config = await asyncio.to_thread(ModelConfig.from_toml, file)
        except Exception as e:
            full = _reason(e, limit=None)
            entry.config_error = self._public(entry, full)
            kept = "; serving with the previous settings" if entry.config else ""
            log.warning("model %s: %s%s", entry.name, one_line(full, _REASON_LIMIT), kept)
            return [f"{entry.name} config failed"]
        entry.config_error = None
        if config == entry.config:
            return []
        first = entry.config is None
        entry.config = config
        for state in entry.versions.values():
            state.tried = None
        return [] if first else [f"{entry.name} config changed"]

    async def _attempt(
        self,
        entry: _Entry,
        number: int,
        previous: ModelVersion | None,
        predecessor: ModelVersion | None = None,
    ) -> ModelVersion | str:
        """Load (or reuse) one version in a worker thread; the reason string on failure.
        ``predecessor``: the version it would take over from, whose inputs it must keep."""
        assert entry.config is not None
        state = entry.versions[number]
        fingerprint = state.fingerprint
        state.loading = True
        state.refused = False
        try:
            result = await asyncio.to_thread(
                _build, entry.name, str(number), state.path, entry.config, previous, predecessor
            )
        except _WarmupFailed as e:
            await e.executor.close()
            error = _reason(e.cause, limit=None)
        except SignatureChanged as e:
            state.refused = True
            error = _reason(e, limit=None)
        except Exception as e:
            error = _reason(e, limit=None)
        else:
            state.tried, state.error = fingerprint, None
            if result is not previous:
                log.info("model %s version %s loaded from %s", entry.name, number, state.path)
            return result
        finally:
            state.loading = False
        state.tried, state.error = fingerprint, self._public(entry, error)
        serving = "; the previous files keep serving" if previous is not None else ""
        shown = one_line(error, _REASON_LIMIT)
        log.warning("model %s version %s failed to load: %s%s", entry.name, number, shown, serving)
        return state.error

    def _public(self, entry: _Entry, text: str) -> str:
        """``text`` (one line, shortened) with the repository's location on this machine cut
        off, for clients: paths read ``<name>/<version>/model.onnx``."""
        if entry.root is not None:
            text = text.replace(str(entry.root.resolve()) + os.sep, entry.name + os.sep)
        for root in self._roots:
            text = text.replace(root + os.sep, "")
        return one_line(text, _REASON_LIMIT)

    def _scan(self) -> dict[str, Disk]:
        """The models on disk (runs in a worker thread)."""

        def external(name: str, version: str) -> Iterable[Path]:
            served = self._serving.get(name, {}).get(version)
            return served.model.external_files if served is not None else ()

        return scan(self.path, self.single, external)

    # --- state for index() and errors --------------------------------------------------------

    def _version_state(self, entry: _Entry, number: int) -> tuple[str, str]:
        state = entry.versions[number]
        if str(number) in self._serving.get(entry.name, {}):
            notes = []
            if state.error is not None:
                notes.append(f"serving the previous files; reload failed: {state.error}")
            if entry.config_error is not None:
                notes.append(f"serving with the previous settings; {entry.config_error}")
            if state.blocked is not None:
                notes.append(f"serving the files loaded before; {state.blocked}")
            if state.note:
                notes.append(state.note)
            return READY, "; ".join(notes)
        if entry.unloaded:
            return UNAVAILABLE, "unloaded"
        if state.loading:
            return LOADING, ""
        if entry.config is None:
            return UNAVAILABLE, entry.config_error or _WAITING
        if state.blocked is not None:
            return UNAVAILABLE, state.blocked
        if not state.fingerprint:
            return UNAVAILABLE, "the version directory holds no files"
        if state.waiting:
            return UNAVAILABLE, _WAITING
        if state.error is not None and state.tried == state.fingerprint:
            return UNAVAILABLE, state.error
        return UNAVAILABLE, _NOT_SELECTED

    def _model_reason(self, entry: _Entry) -> str:
        """Why a model serves nothing, in one line."""
        if entry.unloaded:
            return "unloaded"
        if entry.config is None and entry.config_error:
            return entry.config_error
        if not entry.versions:
            if entry.root is None:
                return f"{self.path.name}: the model file is gone"
            return f"no version directories (expected {entry.name}/<version>/model.onnx)"
        number = max(entry.versions)
        return self._version_state(entry, number)[1] or "not loaded yet"

    def _known_hint(self) -> str:
        names = sorted(self._entries)
        if not names:
            return "the repository has no models"
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        return f"models: {shown}"

    def _close_later(self, executor: ModelExecutor) -> None:
        """Close an executor no longer served, in the background (it drains its requests)."""
        task = asyncio.create_task(executor.close())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_close_failure)


_NOT_SELECTED = "not selected by the version policy"
_REASON_LIMIT = 500
_WAITING = "waiting for its files to stop changing"


def _build(
    name: str,
    version: str,
    path: Path,
    config: ModelConfig,
    previous: ModelVersion | None,
    predecessor: ModelVersion | None = None,
) -> ModelVersion:
    """Load, build and warm up one version (blocking; runs in a worker thread). Returns
    ``previous`` itself when the files hold the same model and the settings are the same.
    SignatureChanged when its inputs differ from ``predecessor``'s, unless the config allows."""
    file = resolve_model_path(path)
    model: Model | None = None
    if previous is not None and _same_files(previous.model, file):
        if previous.config == config:
            return previous
        model = previous.model
    if model is None:
        model = Model.load(file)
        digest = model.digest  # now, before the files can change again
        if previous is not None and previous.config == config and digest == previous.model.digest:
            return previous
    if predecessor is not None and not config.allow_signature_change:
        _check_signature(model.signature, predecessor)
    executor = ModelExecutor(model, config, name=name, version=version)
    try:
        executor.warmup(_warmup_feeds(config, file))
    except Exception as e:
        raise _WarmupFailed(executor, e) from e
    return ModelVersion(name, version, model, config, executor)


def _predecessor(serving: dict[int, ModelVersion], number: int) -> ModelVersion | None:
    """The served version that version ``number`` would take over from: itself, or the highest
    one when ``number`` is above it (clients that name no version move to it); None when it
    takes over from nothing (the first load, or a version below the highest)."""
    if number in serving:
        return serving[number]
    highest = max(serving, default=0)
    return serving[highest] if number > highest > 0 else None


def _check_signature(new: Signature, old: ModelVersion) -> None:
    """SignatureChanged naming what ``signature_changes`` finds between ``old`` and ``new``."""
    changes = signature_changes(old.executor.signature, new)
    if changes:
        shown = "; ".join(changes[:3]) + (
            f" and {len(changes) - 3} more" if len(changes) > 3 else ""
        )
        raise SignatureChanged(
            f"its signature differs from that of version {old.version}, which keeps serving: "
            f"{shown}",
            hint="set allow_signature_change = true in the model's ferry.toml to let it take over",
        )


def signature_changes(old: Signature, new: Signature) -> list[str]:
    """What a client of ``old`` would find broken in ``new``: inputs added, removed or with
    another dtype, rank or fixed dim, and outputs removed; [] when nothing.

        signature_changes(v1.signature, v2.signature)  # ["input 'x' is FP64, was FP32"]
    """
    before = {spec.name: spec for spec in old.inputs}
    after = {spec.name: spec for spec in new.inputs}
    changes = [f"input {n!r} is gone" for n in before if n not in after]
    changes += [f"input {n!r} is new" for n in after if n not in before]
    for name in before.keys() & after.keys():
        was, now = before[name], after[name]
        if _datatype(was) != _datatype(now):
            changes.append(f"input {name!r} is {_datatype(now)}, was {_datatype(was)}")
        elif not _same_dims(was, now):
            changes.append(f"input {name!r} has shape {now.shape_text()}, was {was.shape_text()}")
    outputs = set(new.output_names)
    changes += [f"output {n!r} is gone" for n in old.output_names if n not in outputs]
    return sorted(changes)


def _datatype(spec: TensorSpec) -> str:
    return spec.dtype.v2 or spec.dtype.onnx_name


def _same_dims(was: TensorSpec, now: TensorSpec) -> bool:
    """Same rank, and the same size on every axis fixed in either (symbolic names aside)."""
    if was.shape is None or now.shape is None:
        return was.shape is None and now.shape is None
    if len(was.shape) != len(now.shape):
        return False
    return all(
        a == b
        for a, b in zip(was.shape, now.shape, strict=True)
        if isinstance(a, int) or isinstance(b, int)
    )


def _warmup_feeds(config: ModelConfig, file: Path) -> dict[str, np.ndarray] | None:
    """The first feed set of the config's ``warmup_inputs`` (beside the model file), or
    None for the executor's own."""
    if config.warmup_inputs is None:
        return None
    return load_feeds(file.parent / config.warmup_inputs)[0]


def _same_files(model: Model, file: Path) -> bool:
    """Whether ``file`` (with the model's external data files) hashes to ``model.digest``."""
    if model.path is None or model.path.resolve() != file.resolve():
        return False
    h = hashlib.sha256()
    try:
        for p in (file, *model.external_files):
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    except OSError:
        return False
    return h.hexdigest() == model.digest


def _reason(error: BaseException, limit: int | None = _REASON_LIMIT) -> str:
    """An error as one line: FerryErrors as they print, others with their type."""
    if isinstance(error, FerryError) or not str(error).strip():
        return one_line(error, limit)
    return one_line(f"{type(error).__name__}: {error}", limit)


def _consume(task: asyncio.Task[Any]) -> None:
    """Retrieve a task's exception so a caller that was cancelled leaves no warning."""
    if not task.cancelled():
        task.exception()


def _log_close_failure(task: asyncio.Task[Any]) -> None:
    error = None if task.cancelled() else task.exception()
    if error is not None:
        log.warning("closing an executor failed: %s", _reason(error))
