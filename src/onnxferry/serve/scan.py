"""What a model repository holds on disk: models, versions and their fingerprints.

    found = scan(Path("models/"), single=False, external=lambda name, version: ())
    found["resnet"].versions[2].fingerprint     # ((path, size, mtime_ns, inode), ...)

A version is fingerprinted by (path, size, mtime_ns, inode) of the non-hidden files in its
directory, breadth first, reading at most ``MAX_VERSION_ENTRIES`` entries and following no
link to a directory; a version directory linking outside the repository (and its model
directory) is refused. The repository (repository.py) acts on what two scans agree on.
"""

from __future__ import annotations

import logging
import os
import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

log = logging.getLogger("onnxferry.serve")

Stamp = tuple[int, int, int]
"""(size, mtime_ns, inode) of one file."""
Fingerprint = tuple[tuple[str, int, int, int], ...]
"""(path, size, mtime_ns, inode) of every file of a version, sorted."""

NEVER: Stamp = (-1, -1, -1)
MAX_VERSION_ENTRIES = 1000
"""Directory entries a scan examines per version; past it only the model file, the served
version's external data files and the entries already examined are watched."""
OUTSIDE = "the version directory links outside the model repository; refused"
CROWDED = (
    f"the version directory holds more than {MAX_VERSION_ENTRIES} entries; only the first "
    f"{MAX_VERSION_ENTRIES}, the model file and its external data are watched"
)
VERSION_DIR = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class Seen:
    """One version as found by a scan."""

    path: Path
    fingerprint: Fingerprint
    blocked: str | None = None
    note: str = ""


@dataclass
class Disk:
    """One model as found by a scan."""

    config_stamp: Stamp | None
    versions: dict[int, Seen]


def scan(
    path: Path, single: bool, external: Callable[[str, str], Iterable[Path]]
) -> dict[str, Disk]:
    """The models under a repository ``path`` (or the one model file, ``single``) as they are
    on disk now; ``external(name, version)`` names the served version's external data files,
    which are watched too."""
    if single:
        extra = external(path.stem, "1")
        versions: dict[int, Seen] = {}
        if path.is_file():
            versions[1] = Seen(path, fingerprint([path, *extra]))
        return {path.stem: Disk(None, versions)}
    found: dict[str, Disk] = {}
    real_repo = path.resolve()
    for model_dir in listed(path):
        if not model_dir.is_dir():
            log.debug("model repository: ignoring %s (not a directory)", model_dir)
            continue
        versions = {}
        for version_dir in listed(model_dir):
            number = version_number(version_dir.name)
            if number is None or not version_dir.is_dir():
                if version_dir.name != "ferry.toml":
                    log.debug("model repository: ignoring %s (not a version)", version_dir)
                continue
            if number in versions:
                log.debug("model repository: ignoring %s (duplicate version)", version_dir)
                continue
            watched = external(model_dir.name, str(number))
            versions[number] = see_version(version_dir, real_repo, watched)
        found[model_dir.name] = Disk(file_stamp(model_dir / "ferry.toml"), versions)
    return found


def check_repository_dir(path: Path) -> None:
    """Refuse a model directory passed where a repository is expected."""
    children = listed(path)
    models = [p.name for p in children if p.is_file() and p.suffix.lower() == ".onnx"]
    if models:
        raise InputError(
            f"{path} holds {models[0]} directly, so it is not a model repository",
            hint=f"serve the file ({path / models[0]}) or lay the directory out as "
            "<name>/<version>/model.onnx",
        )
    numbered = [p.name for p in children if p.is_dir() and version_number(p.name) is not None]
    if numbered:
        raise InputError(
            f"{path} holds version directories ({', '.join(sorted(numbered, key=int))}), so it "
            "is a model directory, not a repository",
            hint=f"serve its parent directory ({path.resolve().parent})",
        )


def listed(directory: Path) -> list[Path]:
    """The non-hidden entries of a directory, sorted ([] when it cannot be read)."""
    try:
        names = sorted(os.listdir(directory))
    except OSError as e:
        log.debug("model repository: cannot list %s (%s)", directory, e.strerror or e)
        return []
    hidden = [n for n in names if n.startswith(".")]
    if hidden:
        log.debug("model repository: ignoring hidden entries in %s: %s", directory, hidden)
    return [directory / n for n in names if not n.startswith(".")]


def see_version(version_dir: Path, real_repo: Path, external: Iterable[Path]) -> Seen:
    """Scan one version directory: refused when it is a link leading outside the repository
    (and its model directory), else fingerprinted within MAX_VERSION_ENTRIES."""
    if version_dir.is_symlink():
        real = version_dir.resolve()
        if not (
            real.is_relative_to(real_repo) or real.is_relative_to(version_dir.parent.resolve())
        ):
            return Seen(version_dir, (), blocked=OUTSIDE)
    files, complete = version_files(version_dir, MAX_VERSION_ENTRIES)
    note = "" if complete else CROWDED
    watched = [version_dir / "model.onnx", *external, *files]
    return Seen(version_dir, fingerprint(watched), note=note)


def version_files(directory: Path, limit: int) -> tuple[list[Path], bool]:
    """The non-hidden files below ``directory``, breadth first, reading at most ``limit``
    entries and following no link to a directory; False with them when some were left."""
    out: list[Path] = []
    pending = deque([directory])
    examined = 0
    while pending:
        try:
            with os.scandir(pending.popleft()) as it:
                for item in it:
                    if examined == limit:
                        return out, False
                    examined += 1
                    if item.name.startswith("."):
                        continue
                    if item.is_dir(follow_symlinks=False):
                        pending.append(Path(item.path))
                    else:
                        out.append(Path(item.path))
        except OSError as e:
            log.debug("model repository: cannot list %s (%s)", e.filename, e.strerror or e)
    return out, True


def file_stamp(path: Path) -> Stamp | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def fingerprint(paths: Iterable[Path]) -> Fingerprint:
    found = []
    for p in dict.fromkeys(paths):
        stamp = file_stamp(p)
        if stamp is not None:
            found.append((str(p), *stamp))
    return tuple(sorted(found))


def version_number(text: str) -> int | None:
    """The version a directory name or request names: a positive integer, else None."""
    if not VERSION_DIR.fullmatch(text):
        return None
    number = int(text)
    return number if number > 0 else None
