"""One served version, and how it is built: safe load, executor, warm-up (blocking).

    mv = build_version("resnet", "1", Path("models/resnet/1"), ModelConfig(), None)
    build_version("resnet", "1", mv.model.path, mv.config, mv) is mv   # same files and settings
    await mv.executor.close()

``build_version`` runs in a worker thread. Given the version it replaces (``previous``), it
returns that one itself when the files hash to the same model and the settings are the same,
and reuses its loaded model when only the settings changed. Given the version it would take
over from (``predecessor``), it refuses a signature that would break that one's clients
(``takeover.check_signature``) unless the settings allow it. A version that fails its warm-up
raises WarmupFailed, which holds the executor for the caller to close. Given a ``public_key``,
the model file and its external data must verify against their signature (``<model>.sig``)
before anything else, on every build, and the model is built from the bytes that verified
(``signing.load_verified``): else Unsigned, whose message is "signature: <reason>".
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import load_feeds
from ..errors import InputError, ModelLoadError
from ..model import Model, resolve_model_path
from .config import ModelConfig
from .executor import ModelExecutor
from .takeover import check_signature


@dataclass(frozen=True, eq=False)
class ModelVersion:
    """One served version: the loaded model, its settings and the executor running it.
    Compared and hashed by identity: a reload makes a new one."""

    name: str
    version: str
    model: Model
    config: ModelConfig
    executor: ModelExecutor


class WarmupFailed(Exception):
    """The warm-up run of a new executor failed: ``cause``; ``executor`` is still to close."""

    def __init__(self, executor: ModelExecutor, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.executor = executor
        self.cause = cause


class Unsigned(ModelLoadError):
    """The version's model does not verify against its signature and the public key."""


def build_version(
    name: str,
    version: str,
    path: Path,
    config: ModelConfig,
    previous: ModelVersion | None,
    predecessor: ModelVersion | None = None,
    *,
    public_key: Path | None = None,
    model: Model | None = None,
) -> ModelVersion:
    """Load, build and warm up one version (blocking; runs in a worker thread). Returns
    ``previous`` itself when the files hold the same model and the settings are the same.
    SignatureChanged when its inputs differ from ``predecessor``'s, unless the config allows;
    Unsigned when ``public_key`` is given and the model does not verify with it. ``model``:
    one loaded (and verified) elsewhere, built as it is (``path``, ``previous`` and
    ``public_key`` are then not used)."""
    if model is not None:
        return _build(name, version, model, config, predecessor, model.path)
    file = resolve_model_path(path)
    if public_key is not None:  # the verified bytes are the ones that load
        model = load_signed(file, public_key)
        same = previous is not None and model.digest == previous.model.digest
        if previous is not None and same and previous.config == config:
            return previous
        return _build(name, version, model, config, predecessor, file)
    if previous is not None and _same_files(previous.model, file):
        if previous.config == config:
            return previous
        model = previous.model
    if model is None:
        model = Model.load(file)
        digest = model.digest  # now, before the files can change again
        if previous is not None and previous.config == config and digest == previous.model.digest:
            return previous
    return _build(name, version, model, config, predecessor, file)


def _build(
    name: str,
    version: str,
    model: Model,
    config: ModelConfig,
    predecessor: ModelVersion | None,
    file: Path | None,
) -> ModelVersion:
    """The executor of a loaded model, checked against ``predecessor`` and warmed up."""
    check_carried(model)
    if predecessor is not None and not config.allow_signature_change:
        check_signature(model.signature, predecessor.executor.signature, predecessor.version)
    executor = ModelExecutor(model, config, name=name, version=version)
    try:
        executor.warmup(None if file is None else _warmup_feeds(config, file))
    except Exception as e:
        raise WarmupFailed(executor, e) from e
    return ModelVersion(name, version, model, config, executor)


def check_carried(model: Model) -> None:
    """ModelLoadError naming the first input no V2 request can carry (a sequence, a map, a
    complex or float8 tensor): every request needs every input, so none could run it."""
    for spec in model.signature.inputs:
        if not spec.is_array or spec.dtype.v2 is None:
            raise ModelLoadError(
                f"input {spec.name!r} is {spec.type_text}, which the V2 protocol cannot carry, "
                "so no request could run the model",
                hint="export the model with tensor inputs of a V2 datatype",
            )


def load_signed(file: Path, public_key: Path) -> Model:
    """The model in ``file`` built from the very bytes that verified against ``<file>.sig``
    and ``public_key`` (``signing.load_verified``); Unsigned ("signature: <reason>", the key
    named by its file name) otherwise."""
    from ..signing import load_verified

    try:
        result, model = load_verified(file, public_key)
    except InputError as e:  # no signature beside the model (the key was checked at start-up)
        if isinstance(e, ModelLoadError):
            raise
        reason: str | None = e.message
        model = None
    else:
        reason = None if result.ok else result.reason or "verification failed"
    if model is None or reason is not None:
        key = str(Path(public_key))
        raise Unsigned(f"signature: {reason}".replace(key, Path(public_key).name))
    return model


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
