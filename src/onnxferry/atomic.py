"""Atomic file writes: temp files in the target's directory, fsynced, then renamed into place,
so a reader never sees a half-written file and a failure leaves the old files as they were.

    with atomic_write(Path("out/report.json")) as f:       # one file
        f.write(data)
    write_bytes_atomic(Path("out/model.onnx"), blob)

    with AtomicFiles() as files:                           # files that go in together
        with files.create(Path("out/model.data")) as f:    # (a model and its external data)
            f.write(weights)
        with files.create(Path("out/model.onnx")) as f:
            f.write(blob)
        files.commit()
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from .errors import InputError


class AtomicFiles(AbstractContextManager["AtomicFiles"]):
    """Files written under temporary names next to their targets, renamed into place together
    by ``commit``; temporary files never outlive the ``with`` block. If a rename fails, the
    targets already replaced get their previous files back (kept through a hard link)."""

    def __init__(self) -> None:
        self._files: list[tuple[Path, Path]] = []  # (temporary, target)

    @contextmanager
    def create(self, target: Path) -> Iterator[BinaryIO]:
        """A new temporary file for ``target``, flushed to disk when the block ends;
        InputError when it cannot be created."""
        remove_stale_temps(target)
        temp = temp_name(target)
        try:
            f = open(temp, "xb")  # noqa: SIM115 - closed by the with below
        except OSError as e:
            raise _cannot_write(target, e) from e
        self._files.append((temp, target))
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())

    def discard(self, target: Path) -> None:
        """Drop the temporary file made for ``target``."""
        for temp, _ in [f for f in self._files if f[1] == target]:
            self._files.remove((temp, target))
            temp.unlink(missing_ok=True)

    def commit(self) -> None:
        """Rename every file into place, in the order they were created."""
        several = len(self._files) > 1  # one rename is atomic: nothing to put back
        done: list[tuple[Path, bool, Path | None]] = []  # (target, existed, backup)
        try:
            for temp, target in self._files:
                existed = target.is_file()
                done.append((target, existed, _backup(target) if existed and several else None))
                os.replace(temp, target)
        except BaseException:
            for target, existed, backup in reversed(done[:-1]):
                if backup is not None:
                    os.replace(backup, target)
                elif not existed:
                    target.unlink(missing_ok=True)
            raise
        finally:
            for _, _, backup in done:
                if backup is not None:
                    backup.unlink(missing_ok=True)
        if self._files:
            _sync_dir(self._files[-1][1].parent)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for temp, _ in self._files:
            temp.unlink(missing_ok=True)


@contextmanager
def atomic_write(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file that replaces ``path`` only when the block finishes without error.

    The parent directory is created if needed; InputError when it cannot be written.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _cannot_write(path, e) from e
    with AtomicFiles() as files:
        with files.create(path) as f:
            yield f
        files.commit()


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_write(path) as f:
        f.write(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; returns the path."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def temp_name(target: Path) -> Path:
    """A hidden temporary name beside ``target`` that carries this process's id:
    ``.<name>.<pid>-<random>.tmp``."""
    return target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(6)}.tmp")


def remove_stale_temps(target: Path) -> None:
    """Remove the temporary files of ``target`` left by processes that are gone (killed before
    their rename); those of live processes are theirs."""
    prefix = f".{target.name}."
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return
    for entry in entries:
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        pid = name[len(prefix) : -len(".tmp")].split("-", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


def process_alive(pid: int) -> bool:
    """Whether a process with id ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cannot_write(path: Path, e: OSError) -> InputError:
    return InputError(
        f"cannot write {path}: {e.strerror or e}", hint="check that the directory is writable"
    )


def _backup(target: Path) -> Path | None:
    """A hard link to the file now at ``target`` (None if links fail)."""
    backup = target.with_name(f".{target.name}.{secrets.token_hex(6)}.bak")
    try:
        os.link(target, backup)
    except OSError:
        return None
    return backup


def rename_into_place(source: str | Path, target: str | Path) -> None:
    """Rename ``source`` (a file, or a folder onto a free name) to ``target`` in one step,
    then sync the folder, so the new name survives a crash."""
    os.replace(source, target)
    _sync_dir(Path(target).parent)


def point_symlink(link: Path, target: str) -> None:
    """Make ``link`` a symbolic link to ``target``, replacing what is there in one rename: a
    reader sees the old link or the new one, never none."""
    remove_stale_temps(link)
    temp = temp_name(link)
    os.symlink(target, temp)
    try:
        os.replace(temp, link)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _sync_dir(link.parent)


def make_read_only(folder: str | Path) -> None:
    """Mode 0444 on every file under ``folder`` (published files are not edited in place)."""
    for directory, _, names in os.walk(folder):
        for name in names:
            os.chmod(os.path.join(directory, name), 0o444)


def _sync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
