"""Serve a model registry: each model's alias as a V2 model, promotions picked up live, and an
automatic rollback of a new version whose first answers go wrong.

    repo = RegistryRepository.open("registry", alias="production", poll_interval_s=5.0)
    await repo.start()                       # resnet@production serves as model "resnet"
    repo.get("resnet").version               # "2": V2 versions are the registry's versions
    repo.index()                             # a refused promotion shows here, with its reason
    await repo.stop()

``ferry serve registry:PATH [--alias production]`` serves it (``server.build_app`` reads the
``registry:`` prefix). Every model of the registry that has the alias serves under its name,
with one version: the one the alias points at (a model whose alias is removed stops serving).
Settings are the server's (``config``; a registry holds no ``ferry.toml``).

A poll every ``poll_interval_s`` (default ``DEFAULT_POLL_S``) reads the aliases. A version an
alias moved to is loaded while the one serving keeps serving: its signature verified first
when ``public_key`` is given (``access.load_verified_version``: the bytes that verify are the
ones that load; else Unsigned, "signature: ..."), its
model loaded through the safe loader (an encrypted version decrypted in memory, with the key
in ``key_file`` or ``$FERRY_REGISTRY_KEY``), its executor built and warmed up, then run on its
golden data (``golden.test``). A version failing any step is refused with the reason in
``index()`` and the old one keeps serving; so is a higher version whose inputs differ from the
serving one's, unless the settings allow it (takeover.py). Otherwise the version map is
swapped in one assignment and the old executor drains (repository.py): no request fails.

Automatic rollback (``RollbackPolicy``): after a swap the previous version stays loaded while
the new one is watched over its first ``after_requests`` answers or ``window_s`` seconds,
whichever ends first. An answer is an error when it is a 500 (ONNX Runtime failed) or a 504
(past its deadline), or when an output holds NaN or infinity (the client got its 200 and the
outputs); 4xx answers and 503s (busy, reloading) do not count. Once more than ``error_rate``
of the window's requests are errors (as soon as the errors exceed ``error_rate *
after_requests``, or at the window's end over the answers seen), the server swaps the
previous version back at once, lets the new one drain, records an ``auto-rollback`` in the
registry (the alias returns to the previous version; the history holds the reason) and counts
it in ``ferry_auto_rollbacks_total{model}``. The version rolled back from is not loaded again
until the alias is set to it again (or the repository load API asks). A window that ends
without passing the threshold closes the previous version.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelLoadError, UsageError, one_line
from ..model import Model
from ..registry.access import load_verified_version, opened
from ..registry.core import Registry
from ..registry.records import ALIAS, VersionRecord
from .catalog import KnownModel, KnownVersion
from .config import ModelConfig, VersionPolicy
from .repository import Repository, check_public_key
from .scan import Disk, Seen
from .settings import check_positive
from .versions import ModelVersion, Unsigned, WarmupFailed, build_version

log = logging.getLogger("onnxferry.serve")

DEFAULT_ALIAS = "production"
DEFAULT_POLL_S = 5.0
"""How often a registry is polled for alias changes when no interval is given."""
COUNTED = frozenset({"internal", "deadline"})
"""Failure reasons (infer.py) that count against a watched version: 500 and 504."""


@dataclass(frozen=True)
class RollbackPolicy:
    """When a new version goes back: more than ``error_rate`` of its answers are errors over
    its first ``after_requests`` answers or ``window_s`` seconds (``error_rate`` 1: never)."""

    after_requests: int = 100
    window_s: float = 60.0
    error_rate: float = 0.05

    def __post_init__(self) -> None:
        n, window, rate = self.after_requests, self.window_s, self.error_rate
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise UsageError(f"--rollback-after-requests must be an integer >= 1, got {n!r}")
        if not _number(window) or not window > 0:
            raise UsageError(f"--rollback-window-s must be a number > 0, got {window!r}")
        if not _number(rate) or not 0 <= rate <= 1:
            raise UsageError(
                f"--rollback-error-rate must be between 0 and 1, got {rate!r}",
                hint="1 turns automatic rollback off",
            )


@dataclass(frozen=True)
class RegistryOptions:
    """What ``ferry serve registry:PATH`` adds: the alias served, the rollback policy, and
    the key file of encrypted versions (None: ``$FERRY_REGISTRY_KEY`` when one is needed)."""

    alias: str = DEFAULT_ALIAS
    rollback: RollbackPolicy = field(default_factory=RollbackPolicy)
    key_file: Path | None = None


class GoldenFailed(ModelLoadError):
    """A version's outputs on its golden data are not the expected ones."""


@dataclass(eq=False)
class Watch:
    """A version just swapped in, and the one it replaced (kept loaded to return to)."""

    new: ModelVersion
    previous: ModelVersion
    seen: Seen  # the previous version as the catalog knew it
    started: float = field(default_factory=time.monotonic)
    answers: int = 0
    nonfinite: int = 0
    failures: int = 0
    timer: asyncio.TimerHandle | None = None
    over: bool = False

    @property
    def errors(self) -> int:
        return self.nonfinite + self.failures


class RegistryRepository(Repository):
    """The models of a registry at one alias, hot-reloaded, with automatic rollback; see the
    module docstring."""

    def __init__(
        self,
        registry: Registry,
        *,
        alias: str = DEFAULT_ALIAS,
        poll_interval_s: float | None = DEFAULT_POLL_S,
        config: ModelConfig | None = None,
        public_key: Path | None = None,
        key: bytes | None = None,
        rollback: RollbackPolicy | None = None,
    ) -> None:
        """Use ``RegistryRepository.open``, which checks its arguments."""
        super().__init__(
            registry.path,
            single=False,
            poll_interval_s=poll_interval_s,
            config=config,
            public_key=public_key,
        )
        self.registry = registry
        self.alias = alias
        self.key = key
        self.rollback = rollback or RollbackPolicy()
        self._records: dict[tuple[str, int], VersionRecord] = {}
        self._targets: dict[str, int] = {}  # the version each model's alias points at
        self._digests: weakref.WeakKeyDictionary[ModelVersion, str] = weakref.WeakKeyDictionary()
        self._watches: dict[str, Watch] = {}
        self._notes: dict[str, tuple[int, str]] = {}  # what the index says of a returned-to one

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        poll_interval_s: float | None = None,
        config: ModelConfig | None = None,
        public_key: str | Path | None = None,
        alias: str = DEFAULT_ALIAS,
        key_file: str | Path | None = None,
        rollback: RollbackPolicy | None = None,
    ) -> RegistryRepository:
        """The registry in directory ``path``, serving ``alias`` (nothing loaded until
        ``start``); polled every ``poll_interval_s`` (None: ``DEFAULT_POLL_S``). InputError
        for no registry there, an unusable ``public_key`` or key file."""
        if poll_interval_s is not None:
            check_positive("poll interval (seconds)", poll_interval_s)
        if ALIAS.fullmatch(alias) is None:
            raise UsageError(f"{alias!r} is not an alias name", hint="letters, digits, . _ -")
        checked = None if public_key is None else check_public_key(public_key)
        key = None
        if key_file is not None:
            from ..registry.crypto import load_key

            key = load_key(key_file)
        return cls(
            Registry.open(path),
            alias=alias,
            poll_interval_s=DEFAULT_POLL_S if poll_interval_s is None else poll_interval_s,
            config=config,
            public_key=checked,
            key=key,
            rollback=rollback,
        )

    async def stop(self) -> None:
        """Stop polling and watching; close every executor, letting requests finish."""
        watches = list(self._watches.values())
        self._watches.clear()
        for watch in watches:
            watch.over = True
            if watch.timer is not None:
                watch.timer.cancel()
        await super().stop()
        await asyncio.gather(
            *(w.previous.executor.close() for w in watches), return_exceptions=True
        )

    # --- reading the registry (Repository's hooks) -------------------------------------------

    def _scan(self) -> dict[str, Disk]:
        """Each model with the alias, with the one version it points at (in a worker thread)."""
        found: dict[str, Disk] = {}
        for record in self.registry.versions():
            if self.alias in record.aliases:
                self._records[(record.name, record.version)] = record
                found[record.name] = Disk(None, {record.version: self._seen(record)})
        return found

    def _seen(self, record: VersionRecord) -> Seen:
        local = None
        if not record.encrypted:
            local = self.registry.store.local_path(record.location, record.model_file)
        path = local or Path(record.location, record.model_file)
        # versions never change: the name, number and digest say it all
        return Seen(path, ((f"{record.ref} {record.digest}", record.size, 0, 0),))

    def _new_entry(self, name: str) -> KnownModel:
        return KnownModel(name, None, self.default_config, config_stamp=None, config_tried=None)

    def _observe(self, entry: KnownModel, disk: Disk) -> None:
        """Record a scan: the alias's version, and the one serving while that one loads."""
        versions = dict(disk.versions)
        self._targets[entry.name] = max(versions)
        for version in self._serving.get(entry.name, {}):
            known = entry.versions.get(int(version))
            if known is not None:
                versions.setdefault(int(version), Seen(known.path, known.fingerprint))
        note = self._notes.get(entry.name)
        if note is not None and note[0] in versions:
            versions[note[0]] = replace(versions[note[0]], note=note[1])
        super()._observe(entry, Disk(disk.config_stamp, versions))
        for known in entry.versions.values():
            known.stable = True  # an alias moves at once; nothing is half-written

    def _select(self, entry: KnownModel, policy: VersionPolicy, candidates: list[int]) -> list[int]:
        """The alias's version once it is ready, else the one serving."""
        target = self._targets.get(entry.name)
        return [target] if target in candidates else sorted(candidates)[-1:]

    def _build(
        self,
        name: str,
        number: int,
        path: Path,
        config: ModelConfig,
        previous: ModelVersion | None,
        predecessor: ModelVersion | None,
    ) -> ModelVersion:
        """Verify, load, build, warm up and check on golden data (in a worker thread)."""
        record = self._records[(name, number)]
        verified = None
        if self.public_key is not None:  # the bytes that verify are the ones that load
            result, verified = load_verified_version(
                self.registry, record, self.public_key, key=self.key
            )
            if not result.ok:
                reason = result.reason or "verification failed"
                key = self.public_key
                raise Unsigned(f"signature: {reason}".replace(str(key), key.name))
        same = previous is not None and self._digests.get(previous) == record.digest
        if previous is not None and same and previous.config == config:
            return previous
        with opened(self.registry, record, key=self.key) as found:
            model = verified if verified is not None else found.model
            built = build_version(name, str(number), path, config, None, predecessor, model=model)
            if found.golden is not None:
                try:
                    check_golden(found.model, found.golden)
                except Exception as e:
                    raise WarmupFailed(built.executor, e) from e
        self._digests[built] = record.digest
        return built

    # --- watching a new version --------------------------------------------------------------

    def _swapped(
        self, name: str, old: dict[str, ModelVersion], new: dict[str, ModelVersion]
    ) -> set[int]:
        """A new version serves: watch it, keeping the one it replaced loaded."""
        self._notes.pop(name, None)
        current = self._watches.pop(name, None)
        if current is not None:
            self._finish(current)
        if len(old) != 1 or len(new) != 1 or self.rollback.error_rate >= 1:
            return set()
        (previous,), (fresh,) = old.values(), new.values()
        known = self._entries[name].versions.get(int(previous.version))
        if fresh.version == previous.version or known is None:
            return set()
        watch = Watch(fresh, previous, Seen(known.path, known.fingerprint))
        loop = asyncio.get_running_loop()
        watch.timer = loop.call_later(self.rollback.window_s, self._window_over, name, watch)
        self._watches[name] = watch
        return {id(previous)}

    def observe(
        self, served: ModelVersion, outputs: Mapping[str, Any] | None, failure: str = ""
    ) -> None:
        """Count an answer of a watched version (on the event loop, for every request)."""
        watch = self._watches.get(served.name)
        if watch is None or watch.new is not served or watch.over:
            return
        if outputs is not None:
            watch.nonfinite += _nonfinite(outputs)
        elif failure in COUNTED:
            watch.failures += 1
        else:
            return
        watch.answers += 1
        if watch.errors > self.rollback.error_rate * self.rollback.after_requests:
            self._trip(served.name, watch)
        elif watch.answers >= self.rollback.after_requests:
            self._passed(served.name, watch)

    def _window_over(self, name: str, watch: Watch) -> None:
        if watch.over or self._watches.get(name) is not watch:
            return
        if watch.answers and watch.errors / watch.answers > self.rollback.error_rate:
            self._trip(name, watch)
        else:
            self._passed(name, watch)

    def _passed(self, name: str, watch: Watch) -> None:
        del self._watches[name]
        self._finish(watch)
        log.info(
            "model %s version %s passed its first %d answers (%d errors); version %s closed",
            name,
            watch.new.version,
            watch.answers,
            watch.errors,
            watch.previous.version,
        )

    def _finish(self, watch: Watch) -> None:
        """End a watch: close the previous version unless it serves again."""
        watch.over = True
        if watch.timer is not None:
            watch.timer.cancel()
        if not any(mv is watch.previous for mv in self._serving.get(watch.new.name, {}).values()):
            self._close_later(watch.previous.executor)

    def _trip(self, name: str, watch: Watch) -> None:
        """The watched version failed: roll back as soon as the repository is free."""
        watch.over = True
        if watch.timer is not None:
            watch.timer.cancel()
        policy = self.rollback
        reason = (
            f"{watch.errors} of its first {watch.answers} answers in "
            f"{time.monotonic() - watch.started:.1f}s were errors ({watch.nonfinite} with NaN "
            f"or Inf outputs, {watch.failures} answered 500 or 504), past the error rate "
            f"{policy.error_rate:g} over {policy.after_requests} requests or {policy.window_s:g}s"
        )
        task = asyncio.ensure_future(self._exclusive(lambda: self._roll_back(name, watch, reason)))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(self._rollback_done)

    async def _roll_back(self, name: str, watch: Watch, reason: str) -> None:
        """Swap the previous version back, drain the bad one, record it (holding the lock)."""
        if self._watches.get(name) is not watch:
            return  # another version took over meanwhile (and ended the watch)
        del self._watches[name]
        entry = self._entries.get(name)
        serving = list(self._serving.get(name, {}).values())
        if entry is None or len(serving) != 1 or serving[0] is not watch.new:
            self._finish(watch)
            return
        bad, good = watch.new.version, watch.previous.version
        self._serving[name] = {good: watch.previous}  # the swap back: one assignment
        self._close_later(watch.new.executor)
        state = entry.versions.get(int(bad))
        if state is not None:  # not loaded again while the alias points at it
            state.tried, state.error = state.fingerprint, f"auto-rollback: {reason}"
        note = f"returned to by an auto-rollback from version {bad}: {reason}"
        fingerprint = watch.seen.fingerprint
        entry.versions[int(good)] = KnownVersion(
            watch.seen.path, fingerprint, stable=True, tried=fingerprint, note=note
        )
        self._notes[name] = (int(good), note)
        if self.metrics is not None:
            self.metrics.rolled_back(name)
        log.warning("model %s: rolled back from version %s to %s: %s", name, bad, good, reason)
        try:
            await asyncio.to_thread(
                self.registry.set_alias,
                name,
                self.alias,
                int(good),
                action="auto-rollback",
                reason=f"ferry serve: version {bad}: {reason}",
                expect=int(bad),
            )
        except Exception as e:  # the server has returned anyway; the registry is told next time
            log.warning(
                "model %s: the auto-rollback to version %s is not recorded in the registry: %s",
                name,
                good,
                one_line(e),
            )

    def _rollback_done(self, task: asyncio.Future[None]) -> None:
        error = None if task.cancelled() else task.exception()
        if error is not None and not self._stopping:
            log.warning("automatic rollback failed: %s", one_line(error))


def check_golden(model: Model, data: Path) -> None:
    """GoldenFailed unless ``model``'s outputs on the golden data in ``data`` are the
    expected ones (``golden.test``'s tolerances)."""
    from ..golden import test

    cases = test(model, data, threads=1).result.cases
    failed = [case for case in cases if not case.passed]
    if failed:
        first, parity = failed[0], failed[0].parity
        detail = "failed"
        if parity is not None:
            detail = parity.summary().removeprefix(f"{parity.candidate} vs {parity.reference}: ")
        raise GoldenFailed(
            f"golden data: {len(failed)} of {len(cases)} sets fail; {first.name}: {detail}",
            hint="the version does not reproduce the outputs it was registered with",
        )


def _nonfinite(outputs: Mapping[str, Any]) -> bool:
    """Whether a floating output holds NaN or infinity."""
    return any(
        isinstance(a, np.ndarray) and a.dtype.kind in "fc" and not np.isfinite(a).all()
        for a in outputs.values()
    )


def _number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
