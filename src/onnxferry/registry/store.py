"""The registry's artifact store: version folders in a local directory or an fsspec URL.

    store = Store.open("registry/store")                # or "s3://bucket/prefix" (s3fs)
    staged = store.stage("resnet", {"model.onnx": Path("out/model.onnx")})
    store.publish(staged)                               # resnet/<token>/model.onnx
    store.read_bytes(staged.location, "model.onnx")

A version is written under a hidden staging name (``<name>/.partial-<pid>-<token>``), hashed
as it is written, then published by a rename to ``<name>/<token>`` (on object stores, a copy
and a delete). The catalog row that makes it visible is written after that, in one
transaction with ``sweep``, which removes folders no row refers to: a process killed at any
point leaves nothing a reader can see, and the next change to that model tidies it.

S3 endpoints and credentials come from fsspec's configuration and the usual AWS variables
(``FSSPEC_S3_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import posixpath
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..atomic import make_read_only, process_alive, rename_into_place
from ..errors import InputError

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

PARTIAL = ".partial-"
STALE_PARTIAL_S = 24 * 3600.0
"""Age after which another process's staging folder on an object store counts as abandoned
(local ones are removed as soon as their process is gone)."""
CHUNK = 1 << 20


@dataclass(frozen=True)
class FileFact:
    """One stored file: its sha256 and size as stored (after encryption, when encrypted)."""

    sha256: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size}


@dataclass
class Staged:
    """A version's files written under a staging name, not yet visible."""

    name: str
    partial: str
    location: str
    files: dict[str, FileFact] = field(default_factory=dict)


R = TypeVar("R")
Transform = Callable[[str, bytes], bytes]
"""What happens to a file's bytes on the way into the store (``rel, data -> stored``)."""


def _as_input_errors(doing: str) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """A Store method whose I/O and object store client failures become one InputError line
    (``artifact store URL: cannot DOING: why``)."""

    def decorate(method: Callable[..., R]) -> Callable[..., R]:
        @functools.wraps(method)
        def wrapped(self: Store, *args: Any, **kwargs: Any) -> R:
            try:
                return method(self, *args, **kwargs)
            except Exception as e:
                if not (isinstance(e, OSError) or _unreachable(e)):
                    raise
                why = getattr(e, "strerror", None) or str(e) or type(e).__name__
                raise InputError(
                    f"artifact store {self.url}: cannot {doing}: {why}",
                    hint="check that the store is reachable, writable and not full",
                ) from None

        return wrapped

    return decorate


@dataclass(frozen=True)
class Store:
    """An artifact store rooted at ``url``; see the module docstring."""

    url: str
    fs: AbstractFileSystem
    root: str

    @classmethod
    def open(cls, url: str) -> Store:
        """The store at ``url`` (a local path or an fsspec URL such as ``s3://bucket/prefix``);
        InputError when fsspec cannot reach it."""
        import fsspec

        try:
            fs, root = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as e:
            raise InputError(
                f"cannot open the artifact store {url}: {e}",
                hint="for s3:// install onnxferry[registry] (s3fs); check the URL",
            ) from None
        root = root.rstrip("/")
        if _is_local(fs):
            Path(root).mkdir(parents=True, exist_ok=True)
        return cls(url, fs, root)

    @property
    def local(self) -> bool:
        return _is_local(self.fs)

    def path(self, location: str, rel: str = "") -> str:
        return (
            posixpath.join(self.root, location, rel) if rel else posixpath.join(self.root, location)
        )

    def local_path(self, location: str, rel: str = "") -> Path | None:
        """Where a stored file lies on this machine (local stores only)."""
        return Path(self.path(location, rel)) if self.local else None

    # --- writing -----------------------------------------------------------------------------

    def stage(
        self,
        name: str,
        files: Mapping[str, Path],
        *,
        transform: Transform | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Staged:
        """Write ``files`` (``{relative name: local file}``) under a staging name, hashing
        what is stored. InputError (nothing left behind) when a file cannot be read or
        written, e.g. on a full disk."""
        token = secrets.token_hex(8)
        staged = Staged(name, f"{name}/{PARTIAL}{os.getpid()}-{token}", f"{name}/{token}")
        try:
            for rel, source in files.items():
                staged.files[rel] = self._put(
                    source, self.path(staged.partial, rel), rel, transform
                )
                if progress is not None:
                    progress(staged.files[rel].size)
        except BaseException as e:
            with contextlib.suppress(Exception):  # the store may be what failed
                self.remove(staged.partial)
            if isinstance(e, OSError) or _unreachable(e):
                raise InputError(
                    f"cannot store {name}: {getattr(e, 'strerror', None) or e}",
                    hint="check the store's free space and permissions; nothing was registered",
                ) from None
            raise
        return staged

    def _put(self, source: Path, target: str, rel: str, transform: Transform | None) -> FileFact:
        h, size = hashlib.sha256(), 0
        if not _object_store(self.fs):  # s3fs's makedirs would create a missing bucket
            self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
        with open(source, "rb") as src, self.fs.open(target, "wb") as out:
            if transform is None:
                for chunk in iter(lambda: src.read(CHUNK), b""):
                    h.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
            else:
                data = transform(rel, src.read())
                h.update(data)
                size = len(data)
                out.write(data)
            if self.local:
                out.flush()
                os.fsync(out.fileno())
        return FileFact(h.hexdigest(), size)

    @_as_input_errors("publish a version")
    def publish(self, staged: Staged) -> None:
        """Move a staged version to its final name (a rename on local disks)."""
        source, target = self.path(staged.partial), self.path(staged.location)
        if self.local:
            make_read_only(source)
            rename_into_place(source, target)
        else:  # file by file: a recursive mv also tries to copy the "directory" keys
            for rel in staged.files:
                self.fs.copy(self.path(staged.partial, rel), self.path(staged.location, rel))
            self.remove(staged.partial)

    def remove(self, location: str) -> None:
        """Delete a version folder (staged or published); missing is fine."""
        path = self.path(location)
        if self.local:
            for directory, _, _ in os.walk(path):
                os.chmod(directory, 0o755)
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(path, recursive=True)

    def sweep(self, name: str, referenced: Iterable[str]) -> list[str]:
        """Remove the folders of ``name`` that no catalog row refers to: published ones left by
        a process killed before its catalog change (call inside the catalog's write
        transaction, so no other process is between publishing and recording), and staging
        ones whose process is gone. Returns what was removed."""
        removed = self.leftovers(name, referenced)
        for location in removed:
            self.remove(location)
        return removed

    @_as_input_errors("list a model's folders")
    def leftovers(self, name: str, referenced: Iterable[str]) -> list[str]:
        """The folders of ``name`` that ``sweep`` would remove (nothing is changed)."""
        keep = set(referenced)
        self.fs.invalidate_cache(self.path(name))  # another process may have written since
        try:
            entries = self.fs.ls(self.path(name), detail=False)
        except FileNotFoundError:
            return []
        found = []
        for entry in entries:
            base = posixpath.basename(str(entry).rstrip("/"))
            location = f"{name}/{base}"
            if location in keep or not self.fs.isdir(entry):
                continue
            if base.startswith(PARTIAL) and not self._abandoned(base, str(entry)):
                continue
            found.append(location)
        return found

    def _abandoned(self, base: str, entry: str) -> bool:
        if self.local:
            pid = base.removeprefix(PARTIAL).split("-", 1)[0]
            return not pid.isdigit() or not process_alive(int(pid))
        try:  # an object store has no folder times: the newest file's counts
            times = [self.fs.modified(f).timestamp() for f in self.fs.find(entry)]
        except (NotImplementedError, OSError):
            return False
        return bool(times) and time.time() - max(times) > STALE_PARTIAL_S

    # --- reading -----------------------------------------------------------------------------

    @_as_input_errors("read a stored file")
    def read_bytes(self, location: str, rel: str) -> bytes:
        data: bytes = self.fs.cat_file(self.path(location, rel))
        return data

    def digest(self, location: str, rel: str) -> FileFact:
        """The sha256 and size of a stored file, read back (OSError as raised: fsck reports
        missing and unreadable files itself)."""
        h, size = hashlib.sha256(), 0
        with self.fs.open(self.path(location, rel), "rb") as f:
            for chunk in iter(lambda: f.read(CHUNK), b""):
                h.update(chunk)
                size += len(chunk)
        return FileFact(h.hexdigest(), size)

    @_as_input_errors("fetch a version")
    def fetch(self, location: str, files: Mapping[str, FileFact], dest: Path) -> None:
        """Copy a version's files into the local directory ``dest``, each checked against its
        recorded digest (InputError naming the first that differs)."""
        for rel, fact in files.items():
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            self.fs.get_file(self.path(location, rel), str(target))
            got = file_fact(target)
            if got != fact:
                raise InputError(
                    f"stored file {location}/{rel} does not match its recorded digest",
                    hint="the store was changed behind the registry; `ferry registry fsck`",
                )


def file_fact(path: Path) -> FileFact:
    """The sha256 and size of a local file."""
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
            size += len(chunk)
    return FileFact(h.hexdigest(), size)


def _is_local(fs: AbstractFileSystem) -> bool:
    protocol = fs.protocol
    names = (protocol,) if isinstance(protocol, str) else tuple(protocol)
    return "file" in names or "local" in names


def _unreachable(e: BaseException) -> bool:
    """Whether ``e`` is an object store client's failure to connect or authenticate
    (botocore's errors are not OSErrors)."""
    return any(
        c.__name__ == "BotoCoreError" and c.__module__ == "botocore.exceptions"
        for c in type(e).__mro__
    )


def _object_store(fs: AbstractFileSystem) -> bool:
    """Whether ``fs`` keeps flat keys (no folders to make)."""
    protocol = fs.protocol
    names = (protocol,) if isinstance(protocol, str) else tuple(protocol)
    return bool({"s3", "s3a", "gs", "gcs", "abfs", "az"} & set(names))
