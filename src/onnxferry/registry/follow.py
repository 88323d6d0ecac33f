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
the previous version are kept, plus one download under way.

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
import re
import shutil
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http.client import HTTPException, HTTPResponse
from pathlib import Path
from typing import Any, Literal

from ..atomic import make_read_only, point_symlink, rename_into_place, write_text_atomic
from ..errors import FerryError, InputError, UsageError, one_line
from ..report import Table
from .adding import GOLDEN, LINEAGE
from .core import NAME, VersionRecord
from .store import CHUNK, FileFact, file_fact

log = logging.getLogger("onnxferry.follow")

CURRENT = "current"
PREVIOUS = "previous"
VERSIONS = "versions"
PARTIAL = ".partial"
HELD = ".held"
LOCK = ".lock"
RECORD = ".ferry-record.json"
PART = ".part"
MAX_JSON = 16 << 20
"""Bytes of a JSON answer the agent reads at most."""
HEX64 = re.compile(r"[0-9a-f]{64}")

Action = Literal["installed", "unchanged", "held", "refused", "rolled back"]


# --- what the server sends ---------------------------------------------------------------


def wire_record(record: VersionRecord) -> dict[str, Any]:
    """What `ferry registry serve` answers for a version: the record without the store's
    location and the lineage (paths of the machine that added it), with the signature's
    file name."""
    data = record.to_dict()
    for private in ("location", "lineage"):
        data.pop(private, None)
    data["signature"] = record.signature
    return data


@dataclass(frozen=True)
class Target:
    """A version as the server described it, every field checked before it names a path."""

    name: str
    version: int
    digest: str
    model_file: str
    signature: str | None
    encrypted: bool
    files: dict[str, FileFact]
    wire: dict[str, Any]

    @property
    def id(self) -> str:
        """The folder name of this version on a device."""
        return f"{self.name}-{self.version}-{self.digest[:12]}"

    @classmethod
    def parse(cls, data: Any, name: str, source: str) -> Target:
        """The version in ``data``; InputError naming ``source`` when a field is missing,
        malformed, or names a file outside the version (a server never gets to write
        outside DEST)."""

        def bad(why: str) -> InputError:
            return InputError(
                f"{source}: not a version record ({why})",
                hint="is the URL a `ferry registry serve` server?",
            )

        if not isinstance(data, dict):
            raise bad("not a JSON object")
        version, digest, files = data.get("version"), data.get("digest"), data.get("files")
        if data.get("name") != name:
            raise bad(f"it names model {data.get('name')!r}, not {name!r}")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise bad("no version number")
        if not isinstance(digest, str) or not HEX64.fullmatch(digest):
            raise bad("no sha256 digest")
        if not isinstance(files, dict) or not files:
            raise bad("no files")
        facts: dict[str, FileFact] = {}
        for rel, fact in files.items():
            if not safe_rel(rel):
                raise bad(f"unsafe file name {str(rel)[:80]!r}")
            sha, size = (fact.get("sha256"), fact.get("size")) if isinstance(fact, dict) else (0, 0)
            if not isinstance(sha, str) or not HEX64.fullmatch(sha):
                raise bad(f"no sha256 for {rel}")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise bad(f"no size for {rel}")
            facts[rel] = FileFact(sha, size)
        model_file, signature = data.get("model_file"), data.get("signature")
        if model_file not in facts:
            raise bad("its model file is not one of its files")
        if signature is not None and signature not in facts:
            raise bad("its signature is not one of its files")
        return cls(
            name,
            version,
            digest,
            str(model_file),
            signature,
            bool(data.get("encrypted")),
            facts,
            data,
        )


def safe_rel(rel: object) -> bool:
    """Whether ``rel`` may name a file inside a version's folder: relative, no ``.``/``..``
    or empty segment, no backslash or NUL, not one of the agent's own names."""
    if not isinstance(rel, str) or not rel or len(rel) > 1024 or "\\" in rel or "\0" in rel:
        return False
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return False
    return not (rel.endswith(PART) or parts[0] == RECORD)


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


class Refused(FerryError):
    """A version that failed a check (a digest, the signature): not installed."""


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
        target = Target.parse(client.json(_path("models", model, "aliases", alias)), model, source)
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
            _check_signature(final, target, public_key, key)  # a refusal keeps the folder
            return 0, 0
    partial = dest / PARTIAL / target.id
    _tidy(dest / PARTIAL, keep=target.id)
    downloaded = resumed = 0
    try:
        partial.mkdir(parents=True, exist_ok=True)
        for rel, fact in sorted(target.files.items()):
            got = _download(client, target, rel, fact, partial)
            downloaded, resumed = downloaded + got[0], resumed + got[1]
        _check_signature(partial, target, public_key, key)
        record = {**target.wire, "followed": {"url": client.base, "alias": alias}}
        write_text_atomic(partial / RECORD, json.dumps(record, indent=2) + "\n")
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


def _download(
    client: Client, target: Target, rel: str, fact: FileFact, folder: Path
) -> tuple[int, int]:
    """One file into ``folder``: resumed from its ``.part`` when the server still has the
    same file, checked, renamed to its name (a resumed file that fails is fetched whole once
    more). Returns (bytes downloaded, bytes of the part kept)."""
    final = folder / rel
    if final.is_file():
        if file_fact(final) == fact:
            return 0, 0
        final.unlink()
    part = final.with_name(final.name + PART)
    part.parent.mkdir(parents=True, exist_ok=True)
    path = _path("models", target.name, "versions", str(target.version), "files", *rel.split("/"))
    downloaded = 0
    for _attempt in range(2):
        offset = part.stat().st_size if part.is_file() else 0
        if offset > fact.size:
            part.unlink()
            offset = 0
        got, kept = _transfer(client, path, part, fact, offset)
        downloaded += got
        if file_fact(part) == fact:
            rename_into_place(part, final)
            return downloaded, kept
        part.unlink()
        if not kept:
            break  # a whole download that fails is the server's file: refuse
    raise Refused(
        f"{target.name}:{target.version} {rel}: the downloaded file does not match its "
        "recorded sha256",
        hint="the registry's store was changed behind it; run `ferry registry fsck` there",
    )


def _transfer(
    client: Client, path: str, part: Path, fact: FileFact, offset: int
) -> tuple[int, int]:
    """Append the rest of the file from ``offset`` to ``part`` (whole when the server does
    not resume it). Returns (bytes downloaded, bytes kept from before)."""
    etag = f'"{fact.sha256}"'
    headers = {"Range": f"bytes={offset}-", "If-Range": etag} if offset else {}
    if offset and offset == fact.size:
        return 0, offset
    with client.open(path, headers) as response:
        tag = response.headers.get("ETag")
        if tag is not None and tag != etag:
            raise Refused(
                f"{client.base}{path}: the server's file is not the recorded one (ETag {tag})",
                hint="the registry changed while this ran; poll again",
            )
        if response.status == 206 and _range_start(response) == offset:
            mode, kept = "ab", offset
        else:
            mode, kept = "wb", 0
        written = 0
        why = "the connection closed"  # http.client ends a short body without an error
        with open(part, mode) as out:
            try:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    written += len(chunk)
                    if kept + written > fact.size:
                        break  # more than the record says: the check refuses it
            except (OSError, HTTPException) as e:
                why = one_line(e, 120, named=True)
            finally:
                out.flush()
                os.fsync(out.fileno())
    if kept + written < fact.size:
        raise InputError(
            f"the download of {client.base}{path} was interrupted after "
            f"{kept + written} of {fact.size} bytes ({why})",
            hint="the next poll resumes it",
        )
    return written, kept


def _range_start(response: HTTPResponse) -> int | None:
    m = re.fullmatch(r"bytes (\d+)-\d+/\d+", response.headers.get("Content-Range", ""))
    return int(m.group(1)) if m else None


def _check_files(folder: Path, target: Target, *, whole: bool) -> None:
    for rel, fact in target.files.items():
        file = folder / rel
        if not file.is_file() or file_fact(file) != fact:
            raise Refused(f"{folder}/{rel} does not match its recorded sha256")
    if whole and not (folder / RECORD).is_file():
        raise Refused(f"{folder} is not a complete installed version")


def _check_signature(
    folder: Path, target: Target, public_key: str | Path | None, key: bytes | None
) -> None:
    """Refused unless the version's signature verifies with ``public_key`` (nothing to do
    without one)."""
    if public_key is None:
        return
    assert target.signature is not None  # _fetch refused unsigned versions
    from ..signing import verify, verify_contents

    signature = folder / target.signature
    if target.encrypted:
        from .crypto import decrypt, load_key

        secret = key if key is not None else load_key(None)
        other = (GOLDEN + "/", LINEAGE + "/")
        contents = {
            rel: decrypt(secret, (folder / rel).read_bytes(), rel)
            for rel in target.files
            if rel != target.signature and not rel.startswith(other)
        }
        result = verify_contents(target.model_file, contents, public_key, signature)
    else:
        result = verify(folder / target.model_file, public_key, signature)
    if not result.ok:
        raise Refused(
            f"{target.name}:{target.version}: the signature does not verify ({result.reason})",
            hint="check --public-key; a version signed with another key is not installed",
        )


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


# --- the HTTP client ---------------------------------------------------------------------


def _path(*segments: str) -> str:
    return "/v1/" + "/".join(urllib.parse.quote(s, safe="") for s in segments)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an error: the API key must not follow it to another host."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Client:
    """Requests to a `ferry registry serve` server, errors as one line:

    client = Client("http://10.0.0.5:8000", api_key=None, timeout=30.0)
    client.json("/v1/models")                   # {"models": [...]}
    """

    def __init__(self, url: str, api_key: str | None, timeout: float) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise UsageError(
                f"{url!r} is not an http(s) URL", hint="e.g. http://registry.local:8000"
            )
        self.base = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_NoRedirect())

    def open(self, path: str, headers: Mapping[str, str] | None = None) -> HTTPResponse:
        """The response to ``GET path``; InputError for an error status or no answer."""
        request = urllib.request.Request(self.base + path, headers=dict(headers or {}))
        if self.api_key is not None:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            response: HTTPResponse = self._opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            with e:
                raise _status_error(self.base + path, e.code, e.read(64 << 10)) from None
        except (OSError, HTTPException) as e:
            reason = e.reason if isinstance(e, urllib.error.URLError) else e
            raise InputError(
                f"cannot reach {self.base}: {one_line(str(reason), 160) or type(e).__name__}",
                hint="check the URL and that `ferry registry serve` runs there",
            ) from None
        return response

    def json(self, path: str) -> Any:
        with self.open(path) as response:
            try:
                body = response.read(MAX_JSON + 1)
            except (OSError, HTTPException) as e:
                raise InputError(
                    f"{self.base}{path}: the answer was cut off ({one_line(e, 120)})",
                    hint="poll again",
                ) from None
        try:
            if len(body) > MAX_JSON:
                raise ValueError("too large")
            return json.loads(body)
        except ValueError:
            raise InputError(
                f"{self.base}{path}: the answer is not JSON",
                hint="is the URL a `ferry registry serve` server?",
            ) from None


def _status_error(url: str, status: int, body: bytes) -> InputError:
    try:
        message = str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        message = one_line(body.decode("utf-8", "replace"), 160) or f"HTTP {status}"
    if status == 401:
        return InputError(
            f"{url}: the server wants an API key ({message})",
            hint="give it with --api-key-file, --api-key-env or $FERRY_API_KEY",
        )
    return InputError(f"{url}: HTTP {status}: {one_line(message, 300)}")
