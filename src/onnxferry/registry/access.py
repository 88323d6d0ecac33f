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

import posixpath
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ModelLoadError, UnsafeModelError
from ..model import Model
from ..safety import iter_tensors, uses_external_data
from ..signing import VerifyResult, verify, verify_contents
from .adding import GOLDEN
from .core import Registry
from .records import VersionRecord

if TYPE_CHECKING:
    import onnx


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
    name = f"{record.ref} ({record.model_file})"
    if record.signature is None:
        return VerifyResult(False, Path(record.model_file), Path("-"), reason=f"{name}: unsigned")
    with tempfile.TemporaryDirectory(prefix="ferry-verify-") as tmp:
        sig = Path(tmp) / record.signature
        sig.write_bytes(registry.store.read_bytes(record.location, record.signature))
        if record.encrypted:
            contents = decrypted_files(registry, record, key)
            return verify_contents(record.model_file, contents, public_key, sig)
        file = registry.local_files(record, Path(tmp) / "files")
        return verify(file, public_key, sig)


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
    import onnx

    contents = decrypted_files(registry, record, key)
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(contents[record.model_file])
    except Exception:  # google.protobuf's DecodeError (untyped)
        raise ModelLoadError(
            f"{record.ref}: the decrypted model is not an ONNX model",
            hint="the store holds a damaged version; register it again",
        ) from None
    _read_in_memory(proto, contents, record.model_file)
    return Model.from_proto(proto)


def _read_in_memory(proto: onnx.ModelProto, contents: Mapping[str, bytes], model_file: str) -> None:
    """Fill every external tensor of ``proto`` from ``contents`` (names relative to the model's
    folder), checked as the safe loader checks files: no name outside the version, offsets
    and lengths within the data."""
    base = posixpath.dirname(model_file)
    for site in iter_tensors(proto):
        if not uses_external_data(site.tensor):
            continue
        entries = {e.key: e.value for e in site.tensor.external_data}
        location = posixpath.normpath(posixpath.join(base, entries.get("location", "")))
        if location not in contents or location == model_file:
            raise UnsafeModelError(
                f"{site.label} refers to external data {entries.get('location')!r}, which is "
                "not a file of this version",
                hint="register the model with its external data files beside it",
            )
        data = contents[location]
        try:
            offset = int(entries.get("offset", "0"))
            length = int(entries["length"]) if "length" in entries else len(data) - offset
        except ValueError:
            raise UnsafeModelError(
                f"{site.label}: bad offset or length in its external data reference",
                hint="re-export the model",
            ) from None
        if offset < 0 or length < 0 or offset + length > len(data):
            raise UnsafeModelError(
                f"{site.label}: its external data reaches past the end of {location}",
                hint="re-export the model",
            )
        site.tensor.raw_data = data[offset : offset + length]
        del site.tensor.external_data[:]
        site.tensor.ClearField("data_location")


def _fetch_golden(registry: Registry, record: VersionRecord, dest: Path) -> None:
    golden = {k: v for k, v in record.files.items() if k.startswith(GOLDEN + "/")}
    registry.store.fetch(record.location, golden, dest)
