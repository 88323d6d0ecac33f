"""The device's side of the wire to a `ferry registry serve` server: the version record the
server sends, requests to it, and a version's files downloaded and checked. ``follow`` is the
agent that decides what to fetch and installs it.

    with running_registry("registry/") as url:            # `ferry registry serve registry/`
        client = Client(url, api_key=None, timeout=30.0)
        wire = client.json(api_path("models", "resnet", "aliases", "production"))
        target = Target.parse(wire, "resnet", url)          # every field checked
        Path("download").mkdir()
        for rel, fact in target.files.items():
            got = download(client, target, rel, fact, Path("download"))
            assert got == (fact.size, 0)                    # bytes downloaded, bytes resumed
    check_signature(Path("download"), target, "keys/public_key.pem", None)

``wire_record`` is what the server answers for a version (its record without the store's
paths); ``Target.parse`` reads it back on the device, refusing a file name that would land
outside the version's folder. ``Client`` sends ``GET /v1/...`` with the API key as a bearer
token, refuses redirects (the key must not follow one to another host) and turns an error
status or no answer into one line. ``download`` fetches one file to ``<file>.part``, resuming
a part left by an interrupted poll with a Range request whose If-Range is the file's sha256,
and renames it to its name once its sha256 and size match the record. A check that fails is
``Refused``.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from http.client import HTTPException, HTTPResponse
from pathlib import Path
from typing import Any

from ..atomic import rename_into_place
from ..errors import FerryError, InputError, UsageError, one_line
from .adding import GOLDEN, LINEAGE
from .records import VersionRecord
from .store import CHUNK, FileFact, file_fact

RECORD = ".ferry-record.json"
"""The record an installed version's folder holds (no file of the version may take it)."""
PART = ".part"
"""The suffix of a file being downloaded (no file of the version may end with it)."""
MAX_JSON = 16 << 20
"""Bytes of a JSON answer the client reads at most."""
HEX64 = re.compile(r"[0-9a-f]{64}")


class Refused(FerryError):
    """A version that failed a check (a digest, the signature): not installed."""


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


# --- the HTTP client ---------------------------------------------------------------------


def api_path(*segments: str) -> str:
    """The path of an API route, each segment quoted: ``api_path("models", "resnet")``."""
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


# --- downloading and checking ------------------------------------------------------------


def download(
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
    path = api_path(
        "models", target.name, "versions", str(target.version), "files", *rel.split("/")
    )
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


def check_signature(
    folder: Path, target: Target, public_key: str | Path | None, key: bytes | None
) -> None:
    """Refused unless the version's signature verifies with ``public_key`` (nothing to do
    without one)."""
    if public_key is None:
        return
    assert target.signature is not None  # the agent refuses unsigned versions first
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
