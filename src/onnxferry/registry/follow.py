"""Follow a registry channel from a device: poll ``NAME@ALIAS`` on a `ferry registry serve`
server, download a new version, check it, and swap it in; the version it replaced stays for
rollback.

    with running_registry("registry/") as url:           # `ferry registry serve registry/`
        result = follow_once(url, "resnet", "production", "device/",
                             public_key="keys/public_key.pem")
        assert result.action == "installed"                # "unchanged" on the next poll
        model = Model.load(Path("device/current") / result.model_file)
        reg.set_alias("resnet", "production", 1)           # the channel moves back to 1
        assert follow_once(url, "resnet", "production", "device/").previous == 2
    rollback("device/")                                    # to 2 again, held there

What DEST holds (a device's application loads ``DEST/current/<model file>``)::

    current -> versions/resnet-2-<digest12>      symlinks, each swapped by one rename
    previous -> versions/resnet-1-<digest12>
    versions/<id>/                               the version's files and .ferry-record.json
    .partial/<id>/<file>.part                    a download under way, resumed next time
    .held                                        the version ``rollback`` stepped away from
    .lock                                        one agent at a time

A download goes to ``.partial/<id>/``, each file to ``<file>.part``. An interrupted one is
resumed with an HTTP Range request that carries the file's sha256 as If-Range: a server whose
file changed answers whole, and the part is discarded. Each file's sha256 and size are
checked against the version's record (a resumed file that fails is fetched whole once more),
then the signature against ``public_key`` (an unsigned version is then refused; an encrypted
one is checked on its decrypted bytes, with ``key`` or ``$FERRY_REGISTRY_KEY``). Only then is
the folder renamed into ``versions/`` and ``current`` swapped, so the model a device loads is
never half installed; a refused version leaves ``current`` as it was. At most the current and
the previous version are kept, plus one download under way. The requests, the record's
checks and each file's download are ``client``'s; this module is what DEST holds and when.

``rollback`` swaps ``current`` and ``previous`` and holds the version it left: polls leave it
alone while the channel still points at it, and follow again once the channel moves.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
import random
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..atomic import make_read_only, point_symlink, rename_into_place, write_text_atomic
from ..errors import FerryError, InputError, UsageError
from ..report import Table
from .client import RECORD as RECORD  # a version's record in DEST, a name the wire reserves
from .client import Client, Refused, Target, api_path, check_signature, download
from .records import NAME
from .store import file_fact

log = logging.getLogger("onnxferry.follow")

CURRENT = "current"
PREVIOUS = "previous"
VERSIONS = "versions"
PARTIAL = ".partial"
HELD = ".held"
LOCK = ".lock"

Action = Literal["installed", "unchanged", "held", "refused", "rolled back"]


# --- what a device holds -----------------------------------------------------------------


@dataclass(frozen=True)
class Installed:
    """A version installed in DEST: its folder and the record it was installed from."""

    id: str
    path: Path
    record: dict[str, Any]

    @property
    def version(self) -> int | None:
        v = self.record.get("version")
        return v if isinstance(v, int) else None

    @property
    def model(self) -> Path:
        """The model file to load."""
        return self.path / str(self.record.get("model_file", "model.onnx"))


@dataclass(frozen=True)
class DeviceState:
    """What DEST holds: the current and previous versions and the held one's id."""

    current: Installed | None
    previous: Installed | None
    held: str | None


def state(dest: str | Path) -> DeviceState:
    """The versions installed in ``dest`` (None where a link is missing or dangles)."""
    dest = Path(dest)
    held_file = dest / HELD
    held = held_file.read_text(encoding="utf-8").strip() if held_file.is_file() else None
    return DeviceState(_installed(dest, CURRENT), _installed(dest, PREVIOUS), held or None)


def _installed(dest: Path, link: str) -> Installed | None:
    try:
        target = os.readlink(dest / link)
    except OSError:
        return None
    path = dest / target
    try:
        record = json.loads((path / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return Installed(posixpath.basename(target), path, record if isinstance(record, dict) else {})


# --- the result --------------------------------------------------------------------------


@dataclass(frozen=True)
class FollowResult:
    """What one poll did (ReportBody): ``action`` is installed, unchanged, held (rolled back
    from it here), refused (``reason`` says why; DEST unchanged) or rolled back."""

    model: str
    alias: str
    action: Action
    version: int | None = None
    digest: str | None = None
    model_file: str | None = None
    path: Path | None = None
    previous: int | None = None
    reason: str | None = None
    downloaded: int = 0
    resumed: int = 0

    @property
    def ok(self) -> bool:
        return self.action != "refused"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "alias": self.alias,
            "action": self.action,
            "version": self.version,
            "digest": self.digest,
            "model_file": self.model_file,
            "path": None if self.path is None else str(self.path),
            "previous": self.previous,
            "reason": self.reason,
            "downloaded": self.downloaded,
            "resumed": self.resumed,
        }

    def tables(self) -> list[Table]:
        rows: list[tuple[str, Any]] = [
            ("channel", f"{self.model}@{self.alias}"),
            ("action", self.action),
            ("version", "-" if self.version is None else self.version),
            ("digest", self.digest or "-"),
            ("installed at", "-" if self.path is None else str(self.path)),
            ("previous", "-" if self.previous is None else self.previous),
            ("downloaded bytes", self.downloaded),
            ("resumed bytes", self.resumed),
        ]
        if self.reason:
            rows.append(("reason", self.reason))
        return [Table("follow", ("what", "value"), rows)]


# --- the agent ---------------------------------------------------------------------------


def follow_once(
    url: str,
    model: str,
    alias: str,
    dest: str | Path,
    *,
    public_key: str | Path | None = None,
    api_key: str | None = None,
    key: bytes | None = None,
    timeout: float = 30.0,
) -> FollowResult:
    """One poll of ``model@alias`` at ``url`` into ``dest``: install the version the alias
    names when it is not the current one (see the module docstring). A version that fails a
    check is a refused result (DEST unchanged); an unreachable server, a refused API key or
    an interrupted download is InputError (the download resumes on the next poll)."""
    for what, value in (("model", model), ("alias", alias)):
        if NAME.fullmatch(value) is None:
            raise UsageError(f"{value!r} is not a {what} name", hint="letters, digits, . _ -")
    if public_key is not None:
        from ..signing import check_key

        check_key(Path(public_key), private=False)
    client = Client(url, api_key, timeout)
    dest = Path(dest)
    with _locked(dest):
        source = f"{client.base}/v1/models/{model}/aliases/{alias}"
        target = Target.parse(
            client.json(api_path("models", model, "aliases", alias)), model, source
        )
        now = state(dest)

        def result(action: Action, **more: Any) -> FollowResult:
            return FollowResult(
                model,
                alias,
                action,
                version=target.version,
                digest=target.digest,
                model_file=target.model_file,
                **more,
            )

        if now.current is not None and now.current.id == target.id:
            previous = now.previous.version if now.previous else None
            return result("unchanged", path=now.current.path, previous=previous)
        if now.held == target.id:
            why = f"rolled back from {target.name}:{target.version} here"
            return result("held", path=now.current.path if now.current else None, reason=why)
        (dest / HELD).unlink(missing_ok=True)  # the channel moved on
        try:
            got = _fetch(client, target, alias, dest, public_key, key)
        except Refused as e:
            log.warning("refused %s:%s: %s", model, target.version, e)
            return result("refused", reason=str(e))
        try:
            previous = _swap(dest, target.id)
        except OSError as e:
            raise _cannot_swap(dest, e) from None
        path = dest / VERSIONS / target.id
        return result("installed", path=path, previous=previous, downloaded=got[0], resumed=got[1])


def follow(
    url: str,
    model: str,
    alias: str,
    dest: str | Path,
    *,
    interval: float = 60.0,
    stop: threading.Event | None = None,
    on_result: Callable[[FollowResult | FerryError], None] | None = None,
    public_key: str | Path | None = None,
    api_key: str | None = None,
    key: bytes | None = None,
    timeout: float = 30.0,
) -> None:
    """Poll every ``interval`` seconds (+-10%, so a fleet spreads out) until ``stop`` is set;
    the other options as ``follow_once``'s. A poll that fails (server down, refused version) is
    logged and passed to ``on_result``, and the next one tries again; a UsageError ends it."""
    if not interval > 0:
        raise UsageError(f"the interval must be positive, got {interval:g}")
    stop = stop or threading.Event()
    while not stop.is_set():
        outcome: FollowResult | FerryError
        try:
            outcome = follow_once(
                url, model, alias, dest, public_key=public_key, api_key=api_key, key=key,
                timeout=timeout,
            )  # fmt: skip
        except UsageError:
            raise
        except FerryError as e:
            log.warning("%s", e)
            outcome = e
        if on_result is not None:
            on_result(outcome)
        stop.wait(interval * random.uniform(0.9, 1.1))


def rollback(dest: str | Path) -> FollowResult:
    """Swap ``current`` and ``previous`` in ``dest`` and hold the version left, so polls do
    not install it again while the channel still names it. InputError without a previous
    version."""
    dest = Path(dest)
    with _locked(dest):
        now = state(dest)
        if now.current is None or now.previous is None:
            raise InputError(
                f"{dest} has no previous version to roll back to",
                hint="a previous version is kept once a second one was installed",
            )
        write_text_atomic(dest / HELD, now.current.id + "\n")
        try:
            _point(dest, PREVIOUS, now.current.id)
            _point(dest, CURRENT, now.previous.id)
        except OSError as e:
            raise _cannot_swap(dest, e) from None
        back = now.previous
        record = back.record
        followed = record.get("followed")
        alias = followed.get("alias") if isinstance(followed, dict) else None
        return FollowResult(
            str(record.get("name", "")),
            str(alias or "-"),
            "rolled back",
            version=back.version,
            digest=record.get("digest"),
            model_file=record.get("model_file"),
            path=back.path,
            previous=now.current.version,
        )


# --- downloading and checking ------------------------------------------------------------


def _fetch(
    client: Client,
    target: Target,
    alias: str,
    dest: Path,
    public_key: str | Path | None,
    key: bytes | None,
) -> tuple[int, int]:
    """The version's folder in ``dest/versions``, checked: reused when it is already there
    (the previous version), else downloaded. Returns (bytes downloaded, bytes resumed);
    Refused when a check fails (the bad files removed)."""
    if public_key is not None and target.signature is None:
        raise Refused(
            f"{target.name}:{target.version} is unsigned and --public-key asks for a signature",
            hint="sign it when adding it (`ferry registry add --sign-key`)",
        )
    final = dest / VERSIONS / target.id
    if final.is_dir():
        try:
            _check_files(final, target, whole=True)
        except Refused:
            _remove(final)  # changed on this device: fetch it again
        else:
            check_signature(final, target, public_key, key)  # a refusal keeps the folder
            return 0, 0
    partial = dest / PARTIAL / target.id
    _tidy(dest / PARTIAL, keep=target.id)
    downloaded = resumed = 0
    try:
        partial.mkdir(parents=True, exist_ok=True)
        for rel, fact in sorted(target.files.items()):
            got = download(client, target, rel, fact, partial)
            downloaded, resumed = downloaded + got[0], resumed + got[1]
        check_signature(partial, target, public_key, key)
        record = {**target.wire, "followed": {"url": client.base, "alias": alias}}
        write_text_atomic(partial / RECORD, json.dumps(record, indent=2) + "\n")
        _strays(partial, target, remove=True)  # e.g. a temp file of a killed earlier attempt
        make_read_only(partial)
        final.parent.mkdir(exist_ok=True)
        rename_into_place(partial, final)
    except Refused:
        _remove(partial)
        raise
    except OSError as e:
        raise InputError(
            f"cannot write {partial}: {e.strerror or e}",
            hint="check the free space and permissions of the --to folder",
        ) from None
    return downloaded, resumed


def _check_files(folder: Path, target: Target, *, whole: bool) -> None:
    for rel, fact in target.files.items():
        file = folder / rel
        if not file.is_file() or file_fact(file) != fact:
            raise Refused(f"{folder}/{rel} does not match its recorded sha256")
    if whole and not (folder / RECORD).is_file():
        raise Refused(f"{folder} is not a complete installed version")
    if whole and _strays(folder, target, remove=False):
        raise Refused(f"{folder} holds files its record does not list")


def _strays(folder: Path, target: Target, *, remove: bool) -> list[Path]:
    """Files under ``folder`` that are neither the version's files nor its record (removed
    when ``remove``)."""
    wanted = {folder / rel for rel in target.files} | {folder / RECORD}
    found = [p for p in folder.rglob("*") if not p.is_dir() and p not in wanted]
    for p in found if remove else ():
        p.unlink()
    return found


# --- swapping ----------------------------------------------------------------------------


def _swap(dest: Path, new: str) -> int | None:
    """Make ``new`` current, the current one previous, and remove other versions. Each link
    changes by one rename; returns the previous version's number."""
    now = state(dest)
    if now.current is not None and now.current.id != new:
        _point(dest, PREVIOUS, now.current.id)
    _point(dest, CURRENT, new)
    _tidy(dest / VERSIONS, keep=new, also=now.current.id if now.current else None)
    after = state(dest).previous
    return after.version if after is not None else None


def _cannot_swap(dest: Path, e: OSError) -> InputError:
    return InputError(
        f"cannot swap the version in {dest}: {e.strerror or e}",
        hint=f"{dest}/{CURRENT} and {dest}/{PREVIOUS} must be symlinks this agent made",
    )


def _point(dest: Path, link: str, version_id: str) -> None:
    point_symlink(dest / link, f"{VERSIONS}/{version_id}")


def _tidy(folder: Path, keep: str, also: str | None = None) -> None:
    """Remove every entry of ``folder`` but ``keep`` and ``also``."""
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.name not in (keep, also):
            _remove(entry)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(dest: Path) -> Iterator[None]:
    """DEST made, and held by this agent alone (InputError when another holds it)."""
    try:
        dest.mkdir(parents=True, exist_ok=True)
        handle = open(dest / LOCK, "a+b")  # noqa: SIM115 - closed below
    except OSError as e:
        raise InputError(
            f"cannot use {dest}: {e.strerror or e}", hint="check that the folder is writable"
        ) from None
    with handle:
        try:
            import fcntl
        except ImportError:  # not POSIX: one agent per folder is up to the user
            yield
            return
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise InputError(
                f"another `ferry follow` is working on {dest}", hint="let it finish"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
