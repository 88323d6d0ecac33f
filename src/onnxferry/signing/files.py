"""What a model signature covers: the model file with its external data, hashed file by file.

    signature = default_signature("model.onnx")               # model.onnx.sig, beside it
    files = _relative(_model_files(Path("model.onnx")), Path("."))
    manifest = _hashing_config().hash(Path(".").resolve(), files_to_hash=files)
    assert sorted(_digests(manifest)) == ["model.onnx"]       # names relative to its directory

A model file is covered with the external data files ``Model.load(path).external_files``
lists, by names relative to its directory; a directory is covered whole, less the signature
when it lies inside (``_ignored``). Hashing is model-signing's default: sha256, file by file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:
    from model_signing import hashing as ms_hashing
    from model_signing import manifest as ms_manifest

PathLike = str | Path


def default_signature(path: str | Path) -> Path:
    """Where the signature of ``path`` goes by default: ``<name>.sig`` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".sig")


def _existing(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such {what}", hint="check the path")
    return path


def _model_files(model: Path) -> list[Path]:
    """The model file and its external data files (checked by the safe loader)."""
    from ..model import Model

    return [model, *Model.load(model).external_files]


def _hashing_config() -> ms_hashing.Config:
    """model-signing's default hashing: sha256, file by file, no symbolic links."""
    from model_signing import hashing

    return hashing.Config()  # type: ignore[no-untyped-call]  # an unannotated __init__


def _relative(files: Sequence[Path], root: Path) -> list[Path]:
    root = root.resolve()
    return [root / Path(f).resolve().relative_to(root) for f in files]


def _ignored(root: Path, signature: Path) -> list[Path]:
    """The signature file, when it lies inside a signed directory (relative to ``root``)."""
    try:
        return [signature.resolve().relative_to(root.resolve())]
    except ValueError:
        return []


def _digests(manifest: ms_manifest.Manifest) -> dict[str, str]:
    return {rd.identifier: rd.digest.digest_hex for rd in manifest.resource_descriptors()}
