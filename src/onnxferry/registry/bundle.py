"""Share a registered version: export it as one tar bundle, import it into another registry.

    bundle = export_version(reg, "resnet:1", "resnet-1.tar")   # manifest.json + files/...
    other = Registry.open("other-registry/", create=True)
    record = import_bundle(other, bundle, public_key="keys/public_key.pem")
    record.lineage["imported_from"]["ref"]                     # "resnet:1"

A bundle is an uncompressed tar (import also takes a gzip, bzip2 or xz one) holding
``manifest.json`` (the name, version, digest, size, each file's sha256 and size as stored,
the lineage, whether it is signed or encrypted) and ``files/<name>``: the version's files
exactly as the store holds them (model, external data, signature, golden data, lineage
files). Export streams each file from the store into the tar, checked against its recorded
digest, so a damaged version is never shipped; the bundle is written atomically (a temporary
file renamed into place: a failed export leaves nothing).

Import refuses (``tarsafety``), before anything is written, a member that is not a regular file
or folder (links, devices, fifos, sparse files), an absolute name or one with ``..``, a name
outside ``manifest.json`` and ``files/``, a duplicate, a file the manifest does not list (or
with another size), and more than ``max_members`` members or ``max_bytes`` bytes; tarfile's
``data`` filter checks every member as well, where Python has it. Files are extracted into a
temporary folder, each checked against the manifest's sha256, staged in the store under a
hidden name and checked there as the registry checks its versions (the safe loader, the
manifest's digest, golden data against the model's signature, and with ``public_key`` the
signature; an unsigned bundle is then refused). Only then is the version recorded, as the next
version of its name (or ``name``), with its original lineage plus ``imported_from`` (the
bundle's sha256, the original ``name:version``, who added it and when, whether the signature
was verified). Any failure leaves the registry as it was.

An encrypted version stays encrypted: the bundle holds the ciphertext as stored, and import
stores it as it is (each file is sealed with its name inside the version, which import
keeps), so the key never travels with the bundle and import needs none. Without a key an
encrypted bundle is checked against its manifest only, which catches damage but not a
forger who rewrites the manifest too; give ``public_key`` (which then needs the key: the
signature covers the clear bytes, checked in memory) or ``key`` to check the model, its
golden data and its signature in full before it is registered.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
import tarfile
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .._version import __version__
from ..atomic import atomic_write
from ..errors import InputError, UsageError, VerificationError, one_line
from .adding import GOLDEN, LINEAGE, _commit  # the one path that numbers and records a version
from .core import Registry, whoami
from .records import NAME, Ref, VersionFacts, VersionRecord
from .store import FileFact, file_fact
from .tarsafety import NOT_OURS, bad_name, checked_members, extract_file, match_files, open_tar

FORMAT = "onnxferry-registry-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
FILES = "files"
MAX_MEMBERS = 50_000
"""Most members a bundle may hold (golden data can be thousands of small files)."""
MAX_BYTES = 256 << 30
"""Most bytes a bundle's files may hold together, so a crafted (compressed) bundle cannot
fill the disk."""
MAX_MANIFEST_BYTES = 16 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Manifest(VersionFacts):
    """What a bundle says it holds (``manifest.json``): a version's facts."""

    def to_dict(self) -> dict[str, Any]:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields["files"] = {rel: fact.to_dict() for rel, fact in sorted(self.files.items())}
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "ferry": __version__, **fields}

    @classmethod
    def of(cls, record: VersionRecord) -> Manifest:
        """The manifest of a registered version: its record's fields of the same names."""
        return cls(**{f.name: getattr(record, f.name) for f in dataclasses.fields(VersionFacts)})

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


# --- export ----------------------------------------------------------------------------------


def export_version(registry: Registry, ref: str | Ref, out: str | Path) -> Path:
    """Write version ``ref`` as a bundle at ``out`` (an existing folder: ``NAME-VERSION.tar``
    inside); returns its path. Files stream from the store into the tar, each checked against
    its recorded digest: InputError (and no bundle) when one no longer matches."""
    record = registry.get(ref)
    out = Path(out)
    if out.is_dir():
        out = out / f"{record.name}-{record.version}.tar"
    manifest = json.dumps(Manifest.of(record).to_dict(), indent=1, sort_keys=True).encode()
    mtime = int(record.created_at)
    store = registry.store
    with (
        atomic_write(out) as f,
        tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        tar.addfile(_member(MANIFEST, len(manifest), mtime), io.BytesIO(manifest))
        for rel in sorted(record.files):
            fact = record.files[rel]
            try:
                with store.fs.open(store.path(record.location, rel), "rb") as stored:
                    checked = _Hashing(stored)
                    tar.addfile(_member(f"{FILES}/{rel}", fact.size, mtime), checked)
            except OSError as e:  # missing, or shorter than recorded
                raise InputError(
                    f"cannot read stored file {record.location}/{rel}: {e.strerror or e}",
                    hint="the store was changed behind the registry; `ferry registry fsck`",
                ) from None
            if checked.fact() != fact:
                raise InputError(
                    f"stored file {record.location}/{rel} does not match its recorded digest",
                    hint="the store was changed behind the registry; `ferry registry fsck`",
                )
    return out


class _Hashing(io.RawIOBase):
    """A stream read through, hashing what is read (tarfile copies from it)."""

    def __init__(self, source: IO[bytes]) -> None:
        super().__init__()
        self.source = source
        self.sha256 = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.source.read(len(buffer))
        buffer[: len(data)] = data
        self.sha256.update(data)
        self.size += len(data)
        return len(data)

    def fact(self) -> FileFact:
        return FileFact(self.sha256.hexdigest(), self.size)


def _member(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    """A regular file's header with nothing of this machine in it (owner, mode, time)."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


# --- import ----------------------------------------------------------------------------------


def import_bundle(
    registry: Registry,
    bundle: str | Path,
    *,
    public_key: str | Path | None = None,
    name: str | None = None,
    key: bytes | None = None,
    actor: str | None = None,
    max_members: int = MAX_MEMBERS,
    max_bytes: int = MAX_BYTES,
) -> VersionRecord:
    """Register the version in ``bundle`` as the next version of its name (or ``name``),
    checked first (see the module docstring). ``public_key``: verify its signature (an
    unsigned bundle is refused); ``key``: an encrypted bundle's AES key (with ``public_key``
    it defaults to ``$FERRY_REGISTRY_KEY``). InputError for a bundle that is unsafe or not a
    bundle, VerificationError (exit 1) for files that do not match the manifest or a
    signature that does not verify."""
    bundle = Path(bundle)
    if name is not None and NAME.fullmatch(name) is None:
        raise UsageError(f"{name!r} is not a model name", hint="letters, digits, . _ - (<= 128)")
    if public_key is not None:
        from ..signing import check_key

        check_key(Path(public_key), private=False)  # before any work
    bundle_sha256 = _file_sha256(bundle)
    with tempfile.TemporaryDirectory(prefix="ferry-import-") as tmp:
        manifest = _extract(bundle, Path(tmp), max_members=max_members, max_bytes=max_bytes)
        if public_key is not None and manifest.signature is None:
            raise VerificationError(
                f"{bundle}: {manifest.ref} is unsigned, so it cannot be verified with {public_key}",
                hint="import it without --public-key only if you trust where it came from",
            )
        if manifest.encrypted and public_key is not None and key is None:
            from .crypto import load_key

            key = load_key(None)
        target = name or manifest.name
        lineage = dict(manifest.lineage)
        imported: dict[str, Any] = {
            "bundle": bundle.name,
            "bundle_sha256": bundle_sha256,
            "ref": manifest.ref,
            "digest": manifest.digest,
            "created_at": manifest.created_at,
            "created_by": manifest.created_by,
            "verified": public_key is not None,
        }
        if "imported_from" in lineage:  # imported before: keep that step too
            imported["earlier"] = lineage["imported_from"]
        lineage["imported_from"] = imported
        row: dict[str, Any] = {
            "model_file": manifest.model_file,
            "digest": manifest.digest,
            "size": manifest.size,
            "signature": manifest.signature,
            "golden": manifest.golden,
            "encrypted": manifest.encrypted,
            "lineage": lineage,
            "actor": actor or whoami(),
        }
        files = {rel: Path(tmp, FILES, rel) for rel in manifest.files}
        staged = registry.store.stage(target, files)
        try:
            if staged.files != manifest.files:  # the store holds other bytes than were checked
                raise VerificationError(
                    f"{bundle}: the files staged in the store differ from the bundle's",
                    hint="check the store; nothing was registered",
                )
            provisional = VersionRecord(
                name=target,
                version=0,
                location=staged.partial,
                model_file=manifest.model_file,
                files=staged.files,
                digest=manifest.digest,
                size=manifest.size,
                signature=manifest.signature,
                golden=manifest.golden,
                encrypted=manifest.encrypted,
                lineage=lineage,
                created_at=time.time(),
                created_by=row["actor"],
            )
            _check_staged(registry, provisional, bundle, public_key, key)
        except BaseException:
            registry.store.remove(staged.partial)
            raise
        return _commit(registry, staged, **row)


def _check_staged(
    registry: Registry,
    record: VersionRecord,
    bundle: Path,
    public_key: str | Path | None,
    key: bytes | None,
) -> None:
    """Check a staged version as the registry uses it: its model through the safe loader (in
    memory when encrypted), its digest, its golden data, and its signature with
    ``public_key``. An encrypted one without ``key`` is left as the manifest checked it."""
    from ..data import load_test_cases
    from .access import opened, verify_version

    if record.encrypted and key is None:
        return
    with opened(registry, record, key=key) as version:
        model = version.model
        if not record.encrypted and (model.digest, model.size_bytes) != (
            record.digest,
            record.size,
        ):
            raise VerificationError(
                f"{bundle}: the model's digest is not the one its manifest names",
                hint="the bundle was changed after export; ask for it again",
            )
        if version.golden is not None:
            load_test_cases(version.golden, model.signature)
    if public_key is not None:
        result = verify_version(registry, record, public_key, key=key)
        if not result.ok:
            raise VerificationError(
                f"{bundle}: {result.reason or 'the signature does not verify'}",
                hint="nothing was imported; check the bundle's origin and the public key",
            )


def _extract(bundle: Path, dest: Path, *, max_members: int, max_bytes: int) -> Manifest:
    """The bundle's manifest, with its files extracted under ``dest/files`` and checked
    against it. Every member is checked before anything is written."""
    with open_tar(bundle) as tar:
        members = _members(tar, bundle, dest, max_members=max_members)
        manifest = _read_manifest(tar, members, bundle)
        match_files(members, manifest.files, bundle, prefix=FILES, max_bytes=max_bytes)
        for rel, fact in manifest.files.items():
            extract_file(tar, members[f"{FILES}/{rel}"], dest / FILES / rel, fact, bundle)
    return manifest


def _members(
    tar: tarfile.TarFile, bundle: Path, dest: Path, *, max_members: int
) -> dict[str, tarfile.TarInfo]:
    """The bundle's regular files by name, every member checked (``checked_members``) and
    named as a bundle's: ``manifest.json``, and files and folders under ``files/``."""
    found: dict[str, tarfile.TarInfo] = {}
    for member in checked_members(tar, bundle, dest, max_members=max_members):
        name = member.name
        if member.isdir():
            if name != FILES and not name.startswith(f"{FILES}/"):
                raise InputError(
                    f"{bundle}: unexpected folder {name!r}", hint=f"refused: {NOT_OURS}"
                )
            continue
        if name != MANIFEST and not name.startswith(f"{FILES}/"):
            raise InputError(f"{bundle}: unexpected member {name!r}", hint=f"refused: {NOT_OURS}")
        found[name] = member
    if MANIFEST not in found:
        raise InputError(f"{bundle}: no {MANIFEST} in it", hint=f"refused: {NOT_OURS}")
    return found


def _read_manifest(
    tar: tarfile.TarFile, members: Mapping[str, tarfile.TarInfo], bundle: Path
) -> Manifest:
    member = members[MANIFEST]
    if member.size > MAX_MANIFEST_BYTES:
        raise InputError(
            f"{bundle}: {MANIFEST} is {member.size} bytes", hint=f"refused: {NOT_OURS}"
        )
    f = tar.extractfile(member)
    assert f is not None  # a regular file
    try:
        data = json.loads(f.read())
    except ValueError as e:
        raise InputError(
            f"{bundle}: {MANIFEST} is not JSON ({one_line(e, 100, period=False)})",
            hint=NOT_OURS,
        ) from None
    try:
        return _parse_manifest(data)
    except (KeyError, TypeError, ValueError, AssertionError) as e:
        why = one_line(e, 120, period=False) or type(e).__name__
        raise InputError(
            f"{bundle}: {MANIFEST} is not a bundle manifest ({why})", hint=NOT_OURS
        ) from None


def _parse_manifest(data: Any) -> Manifest:
    """The manifest in ``data``; KeyError, TypeError, ValueError or AssertionError naming what
    is wrong otherwise."""
    _expect(isinstance(data, dict) and data.get("format") == FORMAT, "no format marker")
    found = data["format_version"]
    if not isinstance(found, int) or found > FORMAT_VERSION:
        raise ValueError(f"format version {found!r}; this onnxferry reads {FORMAT_VERSION}")
    files: dict[str, FileFact] = {}
    _expect(isinstance(data["files"], dict), "files")
    for rel, fact in data["files"].items():
        _expect(isinstance(rel, str) and bad_name(rel) is None, f"file name {rel!r}")
        sha, size = fact["sha256"], fact["size"]
        _expect(isinstance(sha, str) and _SHA256.fullmatch(sha) is not None, f"sha256 of {rel}")
        _expect(isinstance(size, int) and size >= 0, f"size of {rel}")
        files[rel] = FileFact(sha, size)
    name, version, model_file = data["name"], data["version"], data["model_file"]
    _expect(isinstance(name, str) and NAME.fullmatch(name) is not None, f"name {name!r}")
    _expect(isinstance(version, int) and version >= 1, f"version {version!r}")
    _expect(model_file in files and "/" not in model_file, f"model file {model_file!r}")
    signature, golden = data["signature"], data["golden"]
    _expect(signature is None or signature in files, f"signature {signature!r}")
    _expect(
        golden is None or (golden == GOLDEN and any(r.startswith(f"{GOLDEN}/") for r in files)),
        f"golden {golden!r}",
    )
    model_like = [
        r for r in files if r != signature and not r.startswith((f"{GOLDEN}/", f"{LINEAGE}/"))
    ]
    _expect(model_file in model_like, "model file among the golden or lineage files")
    _expect(isinstance(data["encrypted"], bool), "encrypted")
    _expect(isinstance(data["lineage"], dict), "lineage")
    _expect(
        isinstance(data["digest"], str) and _SHA256.fullmatch(data["digest"]) is not None, "digest"
    )
    _expect(isinstance(data["size"], int), "size")
    return Manifest(
        name=name,
        version=version,
        model_file=model_file,
        files=files,
        digest=data["digest"],
        size=data["size"],
        signature=signature,
        golden=golden,
        encrypted=data["encrypted"],
        lineage=data["lineage"],
        created_at=float(data["created_at"]),
        created_by=str(data["created_by"]),
    )


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(f"bad {what}")


def _file_sha256(path: Path) -> str:
    try:
        return file_fact(path).sha256
    except FileNotFoundError:
        raise InputError(f"{path}: no such file", hint="check the path") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a folder, not a bundle", hint="give the .tar file") from None
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}", hint="check the path") from None
