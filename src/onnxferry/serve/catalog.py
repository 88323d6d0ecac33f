"""What a model repository serves and says of each version: the read side of a Repository.

    await repo.start()                 # repo: a Repository, the Catalog that loads itself
    repo.get("resnet", "1")            # ModelVersion; ModelNotFound / ModelNotReady with why
    repo.versions("resnet"), repo.names()       # ["1"], ["resnet"]
    repo.index()                       # [{"name", "version", "state", "reason"}, ...]
    repo.unready()                     # {name: reason} of models serving no version
    await repo.stop()

A Catalog holds what is known of each model on disk (``KnownModel``, with a ``KnownVersion``
per version directory) and the versions that serve; the Repository fills both from the disk.
Reasons are one line each, for clients: "waiting for its files to stop changing", "not
selected by the version policy", the load failure, or what serves despite one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import FerryError, InputError
from .config import ModelConfig
from .scan import NEVER, Fingerprint, Stamp, version_number
from .versions import ModelVersion

READY = "READY"
UNAVAILABLE = "UNAVAILABLE"
LOADING = "LOADING"
NOT_SELECTED = "not selected by the version policy"
WAITING = "waiting for its files to stop changing"


class ModelNotFound(InputError):
    """No model by that name, or no such version of it (HTTP 404)."""


class ModelNotReady(FerryError):
    """The model or version exists but cannot serve now: it failed to load, or was unloaded
    (HTTP 503)."""


@dataclass
class KnownVersion:
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
class KnownModel:
    """What is known about one model name."""

    name: str
    root: Path | None  # REPO/<name>; None for a single file
    config: ModelConfig | None = None  # the settings in use; None until a valid one was read
    config_stamp: Stamp | None = NEVER  # ferry.toml as last scanned (None: absent)
    config_stable: bool = False
    config_tried: Stamp | None = NEVER
    config_error: str | None = None
    versions: dict[int, KnownVersion] = field(default_factory=dict)
    unloaded: bool = False


class Catalog:
    """The models known on disk and the versions serving, looked up and reported on; see the
    module docstring. The Repository subclass keeps them in line with the disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: dict[str, KnownModel] = {}
        self._serving: dict[str, dict[str, ModelVersion]] = {}
        self._stopping = False

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
        if reason == NOT_SELECTED:
            raise ModelNotFound(
                f"model {name!r} version {number} is not served: {reason}",
                hint=f"served versions: {', '.join(sorted(serving, key=int)) or 'none'}",
            )
        raise ModelNotReady(f"model {name!r} version {number} is not ready: {reason}")

    def observe(
        self, served: ModelVersion, outputs: Mapping[str, Any] | None, failure: str = ""
    ) -> None:
        """Told of each infer answer of ``served``: its outputs, or the failure reason of an
        error; a catalog that watches new versions (registry_source.py) judges them."""

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

    # --- state for index() and errors --------------------------------------------------------

    def _version_state(self, entry: KnownModel, number: int) -> tuple[str, str]:
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
            return UNAVAILABLE, entry.config_error or WAITING
        if state.blocked is not None:
            return UNAVAILABLE, state.blocked
        if not state.fingerprint:
            return UNAVAILABLE, "the version directory holds no files"
        if state.waiting:
            return UNAVAILABLE, WAITING
        if state.error is not None and state.tried == state.fingerprint:
            return UNAVAILABLE, state.error
        return UNAVAILABLE, NOT_SELECTED

    def _model_reason(self, entry: KnownModel) -> str:
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
