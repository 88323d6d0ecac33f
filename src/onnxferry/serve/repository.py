"""The models a server serves: one .onnx file or a Triton-layout repository, hot-reloaded.

    repo = Repository.open(Path("models/"), poll_interval_s=2.0)
    await repo.start()                       # load everything; failures are recorded, not raised
    mv = repo.get("resnet")                  # highest ready version (ModelVersion)
    result = await mv.executor.infer(feeds)
    repo.index()                             # [{"name", "version", "state", "reason"}, ...]
    repo.budget                              # MemoryBudget (memory_budget in REPO/ferry.toml)
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
signature differs (``takeover.signature_changes``: inputs added, removed, or of another dtype,
rank or fixed dim; outputs removed) from the version it would take over from (the same number,
or the highest served one when it is above it), unless its ``ferry.toml`` sets
``allow_signature_change = true``; once nothing it differs from serves, it loads. A removed
version directory is unloaded (drained); a removed model directory disappears. A changed
``ferry.toml`` rebuilds the executors with the new settings; a bad one keeps the old settings
and is reported.

Signed models only (``public_key``, ``ferry serve --require-signature --public-key PUB``): every
load and reload first verifies the version's model file and its external data against the
signature beside it (``model.onnx.sig``, ``signing.verify``); a version that does not verify
fails like any other, with the reason "signature: ..." in ``index()``, so the version serving
keeps serving. The signature file is fingerprinted with the version: re-signing reloads it.

Memory budget (``memory_budget`` in ``REPO/ferry.toml``, read at ``open``; or ``budget`` set to
a ``budget.MemoryBudget`` before ``start``): each version loaded is told to it, and it unloads
the sessions of idle versions, least recently used first, to stay within it; they keep serving
and reload on their next request. ``index()`` then also gives each row's ``memory_bytes`` (its
sessions, measured at load: ``memory_method``), and the state ``UNLOADED`` for a version the
budget unloaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import FerryError, InputError, ModelLoadError, one_line
from ..signing import check_key, default_signature
from .budget import MEMORY_METHOD, UNLOADED, UNLOADED_REASON, MemoryBudget
from .catalog import Catalog, KnownModel, KnownVersion, ModelNotFound, ModelNotReady
from .config import ModelConfig, RepositoryConfig, VersionPolicy
from .executor import ModelExecutor
from .scan import Disk, check_repository_dir, scan
from .settings import check_positive
from .takeover import SignatureChanged, predecessor_of
from .versions import ModelVersion, WarmupFailed, build_version

if TYPE_CHECKING:
    from .metrics import ServeMetrics, VersionGauges

log = logging.getLogger("onnxferry.serve")

T = TypeVar("T")


class Repository(Catalog):
    """Models by name and version, loaded safely and hot-reloaded; see the module docstring."""

    def __init__(
        self,
        path: Path,
        *,
        single: bool,
        poll_interval_s: float | None = None,
        config: ModelConfig | None = None,
        public_key: Path | None = None,
        memory_budget: int | None = None,
    ) -> None:
        """Use ``Repository.open``, which checks the path."""
        super().__init__(path)
        self.budget = MemoryBudget(memory_budget) if memory_budget else None
        self.single = single
        self.public_key = public_key
        self.poll_interval_s = poll_interval_s
        self.default_config = config or ModelConfig()
        self._lock = asyncio.Lock()
        self._poll_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._started = False
        self._metrics: ServeMetrics | None = None  # the app's (ServeApp sets it)
        base = path.parent if single else path
        self._roots = sorted({str(base.absolute()), str(base.resolve())}, key=len, reverse=True)

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        poll_interval_s: float | None = None,
        config: ModelConfig | None = None,
        public_key: str | Path | None = None,
    ) -> Repository:
        """A repository for ``path`` (a ``.onnx`` file or a repository directory); nothing is
        loaded until ``start``. InputError when the path is neither, or when ``public_key``
        (every version must then verify against its signature) is not a usable public key.
        A repository directory's own ``ferry.toml`` gives the memory budget (UsageError when
        it is malformed)."""
        path = Path(path)
        if poll_interval_s is not None:
            check_positive("poll interval (seconds)", poll_interval_s)
        key = None if public_key is None else check_public_key(public_key)
        if path.is_file():
            if path.suffix.lower() != ".onnx":
                raise InputError(
                    f"{path} is neither an .onnx model nor a model repository directory",
                    hint="pass a model.onnx file or a directory laid out as <name>/<version>/"
                    "model.onnx",
                )
            return cls(
                path, single=True, poll_interval_s=poll_interval_s, config=config, public_key=key
            )
        if not path.is_dir():
            raise InputError(f"{path}: no such file or directory", hint="check the path")
        check_repository_dir(path)
        budget = RepositoryConfig.read(path).memory_budget
        return cls(
            path,
            single=False,
            poll_interval_s=poll_interval_s,
            config=config,
            public_key=key,
            memory_budget=budget,
        )

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

    @property
    def metrics(self) -> ServeMetrics | None:
        """The app's metrics (ServeApp sets them): auto-rollbacks are counted there, and they
        read the versions' response caches and memory from ``gauges``."""
        return self._metrics

    @metrics.setter
    def metrics(self, metrics: ServeMetrics | None) -> None:
        self._metrics = metrics
        if metrics is not None:
            metrics.watch(self.gauges)

    def gauges(self) -> list[VersionGauges]:
        """Each served version's response cache counts and memory, for /metrics."""
        from .metrics import VersionGauges

        rows = []
        for mv in self.serving():
            executor, cache = mv.executor, mv.executor.cache
            rows.append(
                VersionGauges(
                    mv.name,
                    mv.version,
                    cache_hits=0 if cache is None else cache.hits,
                    cache_misses=0 if cache is None else cache.misses,
                    cache_bytes=None if cache is None else cache.bytes,
                    memory_bytes=executor.memory_bytes if executor.loaded else 0,
                    device_batches=tuple(executor.device_runs().items()),
                )
            )
        return rows

    def index(self) -> list[dict[str, Any]]:
        """``Catalog.index``; with a memory budget each row also has ``memory_bytes`` (what its
        sessions took at load; 0 for a version not served) and ``memory_method``, and a
        version the budget unloaded is ``UNLOADED``."""
        rows = super().index()
        if self.budget is None:
            return rows
        for row in rows:
            served = self._serving.get(row["name"], {}).get(row["version"])
            row["memory_bytes"] = 0 if served is None else served.executor.memory_bytes
            row["memory_method"] = MEMORY_METHOD
            if served is not None and not served.executor.loaded:
                row["state"], row["reason"] = UNLOADED, UNLOADED_REASON
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

    def _new_entry(self, name: str) -> KnownModel:
        if self.single:
            return KnownModel(name, None, self.default_config, config_stamp=None, config_tried=None)
        return KnownModel(name, self.path / name)

    def _observe(self, entry: KnownModel, disk: Disk) -> None:
        """Record a scan: fingerprints, whether they held still since the last scan, and
        versions that appeared or went away."""
        entry.config_stable = disk.config_stamp == entry.config_stamp
        entry.config_stamp = disk.config_stamp
        for number in set(entry.versions) - set(disk.versions):
            del entry.versions[number]
        for number, seen in disk.versions.items():
            known = entry.versions.get(number)
            if known is None or known.path != seen.path:
                known = entry.versions[number] = KnownVersion(seen.path)
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
        entry: KnownModel,
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
                selected = self._select(entry, policy, candidates)
                todo = [n for n in selected if needs_load(n)]
                if not todo:
                    break
                for number in sorted(todo, reverse=True):
                    attempted.add(number)
                    result = await self._attempt(
                        entry, number, ready.get(number), predecessor_of(before, number)
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
        held: set[int] = set()
        if not new:
            self._serving.pop(name, None)
        elif new.keys() != old.keys() or any(new[v] is not old[v] for v in new):
            self._serving[name] = new  # the swap: one assignment
            held = self._swapped(name, old, new)
        keep = {id(mv) for mv in new.values()}
        for mv in [*old.values(), *built]:
            if id(mv) not in keep:
                if id(mv) not in held:
                    self._close_later(mv.executor)
                if mv.version not in new:
                    log.info("model %s version %s unloaded", name, mv.version)
                    changes.append(f"{name}/{mv.version} unloaded")
        return changes

    async def _sync_config(self, entry: KnownModel, *, wait: bool, retry: bool) -> list[str]:
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
        entry: KnownModel,
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
                self._build, entry.name, number, state.path, entry.config, previous, predecessor
            )
        except WarmupFailed as e:
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
                if self.budget is not None:
                    self.budget.track(result.executor)
            return result
        finally:
            state.loading = False
        state.tried, state.error = fingerprint, self._public(entry, error)
        serving = "; the previous files keep serving" if previous is not None else ""
        shown = one_line(error, _REASON_LIMIT)
        log.warning("model %s version %s failed to load: %s%s", entry.name, number, shown, serving)
        return state.error

    # --- what a subclass serving from elsewhere changes (registry_source.py) ------------------

    def _build(
        self,
        name: str,
        number: int,
        path: Path,
        config: ModelConfig,
        previous: ModelVersion | None,
        predecessor: ModelVersion | None,
    ) -> ModelVersion:
        """Load, build and warm up one version (runs in a worker thread)."""
        return build_version(
            name, str(number), path, config, previous, predecessor, public_key=self.public_key
        )

    def _select(self, entry: KnownModel, policy: VersionPolicy, candidates: list[int]) -> list[int]:
        """The versions out of ``candidates`` (ready or loadable) to serve."""
        return candidates if self.single else policy.select(candidates)

    def _swapped(
        self, name: str, old: dict[str, ModelVersion], new: dict[str, ModelVersion]
    ) -> set[int]:
        """Told of each swap of a model's version map; the ids of old versions it keeps open
        (closing them is then its business)."""
        return set()

    def _public(self, entry: KnownModel, text: str) -> str:
        """``text`` (one line, shortened) with the repository's location on this machine cut
        off, for clients: paths read ``<name>/<version>/model.onnx``."""
        if entry.root is not None:
            text = text.replace(str(entry.root.resolve()) + os.sep, entry.name + os.sep)
        for root in self._roots:
            text = text.replace(root + os.sep, "")
        return one_line(text, _REASON_LIMIT)

    def _scan(self) -> dict[str, Disk]:
        """The models on disk (runs in a worker thread)."""

        def external(name: str, version: str) -> list[Path]:
            served = self._serving.get(name, {}).get(version)
            files = list(served.model.external_files) if served is not None else []
            if self.public_key is not None:  # a new signature reloads the version
                model = self.path if self.single else self.path / name / version / "model.onnx"
                files.append(default_signature(model))
                if served is not None and served.model.path is not None:
                    files.append(default_signature(served.model.path))
            return files

        return scan(self.path, self.single, external)

    def _close_later(self, executor: ModelExecutor) -> None:
        """Close an executor no longer served, in the background (it drains its requests)."""
        task = asyncio.create_task(executor.close())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_close_failure)


_REASON_LIMIT = 500


def check_public_key(path: str | Path) -> Path:
    """``path`` when it is a PEM public key model-signing verifies with; InputError (one line
    with a hint) otherwise, or when model-signing is not installed."""
    import importlib.util

    for module in ("cryptography", "model_signing"):
        if importlib.util.find_spec(module) is None:
            raise InputError(
                f"serving signed models only needs {module}, which is not installed",
                hint="pip install 'onnxferry[sign]'",
            )
    path = Path(path)
    check_key(path, private=False)
    return path


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
