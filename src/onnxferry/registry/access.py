"""Use a registered version: load its model (decrypted in memory when encrypted), find its
golden data, verify its signature.

    with opened(reg, reg.get("resnet@production")) as v:
        OrtRunner(v.model).run(feeds)
        v.golden                                     # a local folder, or None
    verify_version(reg, record, "keys/public_key.pem").ok

A local store's files are used in place (they are read-only there); a remote store's are
fetched into a temporary folder, each checked against its recorded digest. An encrypted
version is decrypted in memory only: its model and external data never touch the disk in
clear (ONNX Runtime loads the model from bytes), and its signature is checked against the
decrypted bytes (``signing.verify_contents``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..graphs import PROTO_LIMIT, model_from_contents
from ..model import Model
from ..signing import VerifyResult, verify_contents
from .adding import GOLDEN
from .core import Registry
from .records import VersionRecord

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class Opened:
    """A version ready to use: its model and the local folder of its golden data."""

    record: VersionRecord
    model: Model
    golden: Path | None


@contextmanager
def opened(
    registry: Registry, record: VersionRecord, *, key: bytes | None = None
) -> Iterator[Opened]:
    """The version's model and golden data, usable inside the block. ``key``: the encryption
    key of an encrypted version (default: ``$FERRY_REGISTRY_KEY``)."""
    with tempfile.TemporaryDirectory(prefix="ferry-version-") as tmp:
        if record.encrypted:
            model = decrypted_model(registry, record, key)
            _fetch_golden(registry, record, Path(tmp))
            golden = Path(tmp) / GOLDEN if record.golden else None
        else:
            file = registry.local_files(record, Path(tmp))
            model = Model.load(file)
            golden = file.parent / GOLDEN if record.golden else None
        yield Opened(record, model, golden)


def verify_version(
    registry: Registry,
    record: VersionRecord,
    public_key: str | Path,
    *,
    key: bytes | None = None,
) -> VerifyResult:
    """Whether the version's model and external data verify against its stored signature and
    ``public_key`` (a failed result for an unsigned version)."""
    return _verified(registry, record, public_key, key)[0]


def load_verified_version(
    registry: Registry,
    record: VersionRecord,
    public_key: str | Path,
    *,
    key: bytes | None = None,
) -> tuple[VerifyResult, Model | None]:
    """``verify_version``, and the Model built in memory from the very bytes that verified
    (None when they did not, or past the 2 GiB a model can hold in memory: then load it with
    ``opened``)."""
    result, contents = _verified(registry, record, public_key, key)
    if not result.ok or sum(len(b) for b in contents.values()) >= PROTO_LIMIT:
        return result, None
    return result, model_from_contents(contents, record.model_file, where=record.ref)


def _verified(
    registry: Registry, record: VersionRecord, public_key: str | Path, key: bytes | None
) -> tuple[VerifyResult, dict[str, bytes]]:
    """The verdict on the version's model files, read once from the store (decrypted in
    memory when encrypted), and those bytes."""
    name = f"{record.ref} ({record.model_file})"
    if record.signature is None:
        unsigned = VerifyResult(
            False, Path(record.model_file), Path("-"), reason=f"{name}: unsigned"
        )
        return unsigned, {}
    if record.encrypted:
        contents = decrypted_files(registry, record, key)
    else:
        read = registry.store.read_bytes
        contents = {rel: read(record.location, rel) for rel in model_files(record)}
    with tempfile.TemporaryDirectory(prefix="ferry-verify-") as tmp:
        sig = Path(tmp) / Path(record.signature).name
        sig.write_bytes(registry.store.read_bytes(record.location, record.signature))
        return verify_contents(record.model_file, contents, public_key, sig), contents


def model_files(record: VersionRecord) -> list[str]:
    """The names of the model file and its external data (not signature, golden, lineage)."""
    other = (GOLDEN + "/", "lineage/")
    return [rel for rel in record.files if rel != record.signature and not rel.startswith(other)]


def decrypted_files(
    registry: Registry, record: VersionRecord, key: bytes | None
) -> dict[str, bytes]:
    """The clear bytes of the model file and its external data, in memory."""
    from .crypto import decrypt, load_key

    key = key if key is not None else load_key(None)
    return {
        rel: decrypt(key, registry.store.read_bytes(record.location, rel), rel)
        for rel in model_files(record)
    }


def decrypted_model(registry: Registry, record: VersionRecord, key: bytes | None) -> Model:
    """An encrypted version's model, decrypted and with its external data read in, in memory."""
    contents = decrypted_files(registry, record, key)
    return model_from_contents(contents, record.model_file, where=record.ref)


def _fetch_golden(registry: Registry, record: VersionRecord, dest: Path) -> None:
    golden = {k: v for k, v in record.files.items() if k.startswith(GOLDEN + "/")}
    registry.store.fetch(record.location, golden, dest)
