"""Reading an untrusted tar, a registry bundle, safely: every member is checked before anything
is written, and each file is extracted no longer than its size with its sha256 checked.

    with open_tar(bundle) as tar:                          # `ferry registry export resnet:1`
        members = checked_members(tar, bundle, Path("x"), max_members=100)
        files = {member.name: member for member in members if member.isfile()}
        match_files(files, record.files, bundle, prefix="files", max_bytes=1 << 30)
        fact = record.files["model.onnx"]
        extract_file(tar, files["files/model.onnx"], Path("x/model.onnx"), fact, bundle)
    assert bad_name("../etc/passwd") is not None           # would land outside the target

``checked_members`` refuses a member that is not a regular file or folder (links, devices,
fifos, sparse files), an absolute name or one with ``..`` or not in normal form, a duplicate,
and more than ``max_members`` members; tarfile's ``data`` filter checks every member as well,
where Python has it. ``match_files`` refuses files that are not the expected ones or not of
their size, and more than ``max_bytes`` bytes together, so a crafted (compressed) tar cannot
fill the disk. What the members must be called is ``bundle``'s business. Each refusal is one
line: InputError for a tar that is unsafe or not a bundle, VerificationError for files that
do not match what is expected.
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
import re
import tarfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from ..errors import FerryError, InputError, VerificationError, one_line
from .store import CHUNK, FileFact

NOT_OURS = "it is not a bundle made by `ferry registry export`; nothing was imported"
"""The hint of a refused member: nothing about it is what an export writes."""
_DRIVE = re.compile(r"[A-Za-z]:")


@contextlib.contextmanager
def open_tar(bundle: Path) -> Iterator[tarfile.TarFile]:
    """The tar at ``bundle`` (uncompressed, gzip, bzip2 or xz), closed on exit; a missing or
    unreadable file, or one cut off or corrupt while it is read, is InputError."""
    try:
        tar = tarfile.open(bundle, "r:*")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        raise InputError(f"{bundle}: no such file", hint="check the path") from None
    except IsADirectoryError:
        raise InputError(f"{bundle} is a folder, not a bundle", hint="give the .tar file") from None
    except (tarfile.TarError, OSError, EOFError) as e:
        raise InputError(
            f"{bundle}: not a tar bundle ({one_line(e, 120, line='first', period=False)})",
            hint="give a file made by `ferry registry export`",
        ) from None
    try:
        with tar:
            yield tar
    except FerryError:
        raise
    except (tarfile.TarError, OSError, EOFError, ValueError) as e:  # truncated or corrupt
        raise InputError(
            f"{bundle}: cannot read the bundle ({one_line(e, 120, line='first', period=False)})",
            hint="it is damaged or truncated; ask for it again",
        ) from None


def checked_members(
    tar: tarfile.TarFile, bundle: Path, dest: Path, *, max_members: int
) -> Iterator[tarfile.TarInfo]:
    """Each member of ``tar`` (to be extracted under ``dest``), checked: nothing but regular
    files and folders, safe relative names, no duplicates, at most ``max_members``."""
    data_filter = getattr(tarfile, "data_filter", None)  # Python 3.12, 3.11.4, 3.10.12, ...
    seen: set[str] = set()
    for count, member in enumerate(tar, start=1):
        if count > max_members:
            raise InputError(
                f"{bundle}: more than {max_members} members", hint=f"refused: {NOT_OURS}"
            )
        name = member.name
        problem = _unsafe(member)
        if problem is not None:
            raise InputError(f"{bundle}: member {name!r} {problem}", hint=f"refused: {NOT_OURS}")
        if data_filter is not None:
            try:
                data_filter(member, str(dest))  # where extract_file puts it: dest / name
            except tarfile.FilterError as e:
                raise InputError(
                    f"{bundle}: member {name!r} refused ({one_line(e, 120, period=False)})",
                    hint=f"refused: {NOT_OURS}",
                ) from None
        if name in seen:
            raise InputError(
                f"{bundle}: member {name!r} appears twice", hint=f"refused: {NOT_OURS}"
            )
        seen.add(name)
        yield member


def _unsafe(member: tarfile.TarInfo) -> str | None:
    """Why ``member`` may not be extracted (None when it may)."""
    if member.issym():
        return f"is a symbolic link (to {member.linkname!r})"
    if member.islnk():
        return f"is a hard link (to {member.linkname!r})"
    if member.isdev() or not (member.isreg() or member.isdir()):
        return "is not a regular file or folder (a device, fifo or other special file)"
    if member.issparse():
        return "is a sparse file"
    return bad_name(member.name)


def bad_name(name: str) -> str | None:
    """Why ``name`` is not a safe relative file name (None when it is)."""
    if not name or "\0" in name or "\\" in name:
        return "has an empty name or one with a NUL or backslash"
    if name.startswith("/") or _DRIVE.match(name):
        return "has an absolute name"
    parts = name.split("/")
    if ".." in parts:
        return "has '..' in its name (it would land outside the target)"
    if any(p in ("", ".") for p in parts) or posixpath.normpath(name) != name:
        return "has a name that is not in normal form"
    return None


def match_files(
    files: Mapping[str, tarfile.TarInfo],
    expected: Mapping[str, FileFact],
    bundle: Path,
    *,
    prefix: str,
    max_bytes: int,
) -> None:
    """The regular ``files`` under ``prefix/`` are the ``expected`` ones (named below
    ``prefix``), each of the size it names, within ``max_bytes`` together."""
    listed = {f"{prefix}/{rel}" for rel in expected}
    held = {name for name in files if name.startswith(f"{prefix}/")}
    for extra in sorted(held - listed):
        raise InputError(f"{bundle}: {extra!r} is not in its manifest", hint=f"refused: {NOT_OURS}")
    for missing in sorted(listed - held):
        raise VerificationError(
            f"{bundle}: {missing!r} is in its manifest but not in the bundle",
            hint="the bundle is incomplete; ask for it again",
        )
    total = 0
    for rel, fact in expected.items():
        member = files[f"{prefix}/{rel}"]
        if member.size != fact.size:
            raise VerificationError(
                f"{bundle}: {rel} is {member.size} bytes, its manifest says {fact.size}",
                hint="the bundle was changed after export; ask for it again",
            )
        total += member.size
    if total > max_bytes:
        raise InputError(
            f"{bundle}: its files hold {total} bytes, more than the {max_bytes} allowed",
            hint="raise max_bytes if you trust this bundle",
        )


def extract_file(
    tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path, fact: FileFact, bundle: Path
) -> None:
    """Copy one member to ``target`` (a new file), at most its declared size, and check its
    sha256."""
    source = tar.extractfile(member)
    assert source is not None  # a regular file
    target.parent.mkdir(parents=True, exist_ok=True)
    h, left = hashlib.sha256(), fact.size
    with source, open(target, "xb") as out:
        while left > 0:
            chunk = source.read(min(CHUNK, left))
            if not chunk:
                break
            h.update(chunk)
            out.write(chunk)
            left -= len(chunk)
    if left or h.hexdigest() != fact.sha256:
        raise VerificationError(
            f"{bundle}: {member.name} does not match the sha256 in its manifest",
            hint="the bundle was changed or damaged after export; nothing was imported",
        )
