"""The registry over HTTP, read-only: what `ferry registry serve` runs and `ferry follow` polls.

    with running_registry("registry/", api_keys=("0123456789abcdef",)) as url:
        request = urllib.request.Request(f"{url}/v1/models/resnet/aliases/production",
                                         headers={"Authorization": "Bearer 0123456789abcdef"})
        record = json.load(urllib.request.urlopen(request))
        record["version"], record["files"]["model.onnx"]["sha256"]
    serve_registry("registry/", ServerOptions(port=8000))    # blocks until SIGTERM

Routes (GET and HEAD):

- ``/v1/models``: ``{"models": [names]}``
- ``/v1/models/{name}``: ``{"name", "versions": [records], "aliases": {alias: version}}``
- ``/v1/models/{name}/aliases/{alias}`` and ``/v1/models/{name}/versions/{v}``: the version's
  record (``client.wire_record``: number, digest, files with sha256 and size, signature name)
- ``/v1/models/{name}/versions/{v}/files/{rel}``: the stored file, with Content-Length, ETag
  (its recorded sha256, quoted) and single byte ranges (``Range``, ``If-Range``), so an agent
  resumes an interrupted download. ``rel`` must be one of the version's recorded files
  (nothing else of the store can be named); an encrypted version's files are sent as stored.
- ``/v2/health/live`` and ``/v2/health/ready``: no key needed.

API keys work as `ferry serve`'s (``serve.keys``): when there are any, every route but health
needs ``Authorization: Bearer KEY`` (401 before 404). The HTTP protocol under the app is the
one `ferry serve` runs (``serve.connections``: header, keep-alive and write timeouts,
connection caps); files are read off the event loop, in chunks, as the client takes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import FerryError
from ..registry import Ref, Registry, VersionRecord
from ..registry.client import wire_record
from ..registry.records import NAME
from ..registry.store import CHUNK
from .asgi import HttpError, Receive, Scope, Send, respond, respond_error
from .endpoint import MAX_VERSION_DIGITS, cut, error_text
from .keys import check_bearer, check_keys
from .server import ServerOptions, run_until_signal, running_in_thread

log = logging.getLogger("onnxferry.serve")

RANGE = re.compile(r"bytes=(\d*)-(\d*)")
NO_STORE = ((b"cache-control", b"no-cache"),)
"""JSON answers change when an alias moves: caches must ask again."""


class RegistryApp:
    """ASGI app: ``await app(scope, receive, send)`` over one registry, read-only."""

    def __init__(self, registry: Registry, api_keys: tuple[str, ...] = ()) -> None:
        self.registry = registry
        self._keys = tuple(k.encode() for k in check_keys(api_keys, "api_keys"))
        self.started = threading.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.started.set()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        started = False

        async def tracked(message: Any) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self._route(path, method, scope, receive, tracked)
        except HttpError as e:
            if not started:
                await respond_error(send, e.status, e.message, e.headers)
        except asyncio.CancelledError:  # shutting down: a stream under way is cut off
            if not started:
                await respond_error(send, 503, "the server is shutting down")
        except Exception:  # a bug: log it, answer 500 (or cut the stream), keep serving
            log.exception("internal error on %s %s", method, cut(path))
            if not started:
                await respond_error(send, 500, "internal server error; see the server log")

    async def _route(
        self, path: str, method: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if path in ("/v2/health/live", "/v2/health/ready"):
            await respond(send, 200, b"", "text/plain")
            return
        self._authorize(scope)
        parts = path.split("/")
        if parts[:3] != ["", "v1", "models"]:
            raise HttpError(404, f"no route {cut(path)}; see /v1/models", "not_found")
        if method not in ("GET", "HEAD"):
            text = f"method {cut(method, 20)} is not allowed; the registry is read-only"
            raise HttpError(405, text, "method", ((b"allow", b"GET, HEAD"),))
        rest = parts[3:]
        if rest in ([], [""]):
            names = await asyncio.to_thread(self.registry.names)
            await respond_json_fresh(send, {"models": names})
            return
        name = rest[0]
        if NAME.fullmatch(name) is None:
            raise HttpError(404, f"no model {cut(name)!r}", "not_found")
        if len(rest) == 1:
            await respond_json_fresh(send, await asyncio.to_thread(self._model, name))
        elif len(rest) == 3 and rest[1] == "aliases" and NAME.fullmatch(rest[2]):
            record = await self._get(Ref(name, alias=rest[2]))
            await respond_json_fresh(send, wire_record(record))
        elif len(rest) >= 3 and rest[1] == "versions" and _number(rest[2]):
            record = await self._get(Ref(name, version=int(rest[2])))
            if len(rest) == 3:
                await respond_json_fresh(send, wire_record(record))
            elif len(rest) >= 5 and rest[3] == "files":
                await self._file(record, "/".join(rest[4:]), scope, receive, send)
            else:
                raise HttpError(404, f"no route {cut(path)}", "not_found")
        else:
            raise HttpError(404, f"no route {cut(path)}", "not_found")

    def _authorize(self, scope: Scope) -> None:
        """401 unless the request carries one of the keys (when there are any)."""
        if self._keys:
            check_bearer([v for k, v in scope["headers"] if k == b"authorization"], self._keys)

    def _model(self, name: str) -> dict[str, Any]:
        versions = self.registry.versions(name)
        if not versions:
            raise HttpError(404, f"no model {name!r} in the registry", "not_found")
        return {
            "name": name,
            "versions": [wire_record(v) for v in versions],
            "aliases": self.registry.aliases(name),
        }

    async def _get(self, ref: Ref) -> VersionRecord:
        try:
            return await asyncio.to_thread(self.registry.get, ref)
        except FerryError as e:
            raise HttpError(404, error_text(e), "not_found") from None

    async def _file(
        self, record: VersionRecord, rel: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Stream a recorded file of ``record``: whole (200) or one byte range (206)."""
        fact = record.files.get(rel)
        if fact is None:
            raise HttpError(404, f"{record.ref} has no file {cut(rel, 120)!r}", "not_found")
        store = self.registry.store
        location = store.path(record.location, rel)
        try:
            size = await asyncio.to_thread(store.fs.size, location)
        except (OSError, ValueError):
            size = None
        if size != fact.size:
            log.error("registry serve: %s/%s is missing or changed in the store", record.ref, rel)
            text = f"{record.ref} {rel}: the stored file is missing or changed; see the server log"
            raise HttpError(500, text, "store")
        etag = f'"{fact.sha256}"'.encode()
        headers = dict(scope["headers"])
        span = _range(headers.get(b"range"), fact.size)
        if_range = headers.get(b"if-range")
        if if_range is not None and if_range != etag:
            span = None  # the client's part is of another file: send it whole
        if span == "unsatisfiable":
            raise HttpError(
                416,
                f"the range is past the end of {rel} ({fact.size} bytes)",
                "range",
                ((b"content-range", b"bytes */%d" % fact.size),),
            )
        start, end = span if isinstance(span, tuple) else (0, fact.size - 1)
        length = end - start + 1 if fact.size else 0
        out: list[tuple[bytes, bytes]] = [
            (b"content-type", b"application/octet-stream"),
            (b"content-length", b"%d" % length),
            (b"etag", etag),
            (b"accept-ranges", b"bytes"),
        ]
        if isinstance(span, tuple):
            out.append((b"content-range", b"bytes %d-%d/%d" % (start, end, fact.size)))
        status = 206 if isinstance(span, tuple) else 200
        if scope["method"] == "HEAD" or length == 0:
            await send({"type": "http.response.start", "status": status, "headers": out})
            await send({"type": "http.response.body", "body": b""})
            return
        handle = await asyncio.to_thread(store.fs.open, location, "rb")
        gone = asyncio.ensure_future(_disconnect(receive))
        try:
            await asyncio.to_thread(handle.seek, start)
            await send({"type": "http.response.start", "status": status, "headers": out})
            left = length
            while left > 0 and not gone.done():
                chunk = await asyncio.to_thread(handle.read, min(CHUNK, left))
                if not chunk:
                    raise OSError(f"{record.ref} {rel} ended early in the store")
                left -= len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": left > 0})
        finally:
            gone.cancel()
            await asyncio.to_thread(handle.close)


async def respond_json_fresh(send: Send, data: Any) -> None:
    """A JSON answer that caches must not reuse (an alias may move)."""
    body = json.dumps(data).encode()
    await respond(send, 200, body, "application/json", NO_STORE)


async def _disconnect(receive: Receive) -> None:
    """Returns when the client has gone (or the response is complete)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _number(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= MAX_VERSION_DIGITS


def _range(header: bytes | None, size: int) -> tuple[int, int] | str | None:
    """The byte range a Range header asks for (first, last), "unsatisfiable", or None for the
    whole file (no header, several ranges, or one this server does not parse)."""
    if header is None:
        return None
    m = RANGE.fullmatch(header.decode("latin-1").strip())
    if m is None or (not m.group(1) and not m.group(2)):
        return None
    first, last = m.group(1), m.group(2)
    if not first:  # the last N bytes
        n = int(last)
        return (max(size - n, 0), size - 1) if n and size else "unsatisfiable"
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if last and int(last) < start:
        return None
    return (start, end) if start < size else "unsatisfiable"


# --- running it --------------------------------------------------------------------------


def registry_app(path: str | Path, api_keys: tuple[str, ...] = ()) -> RegistryApp:
    """The app over the registry in ``path``; refuses bad keys before it opens anything."""
    check_keys(api_keys, "api_keys")
    return RegistryApp(Registry.open(path), api_keys)


def serve_registry(
    path: str | Path, options: ServerOptions | None = None, api_keys: tuple[str, ...] = ()
) -> int:
    """Serve until SIGTERM or SIGINT (finishing in-flight downloads first); returns 0."""
    options = options or ServerOptions()
    app = registry_app(path, api_keys)
    return run_until_signal(app, app.started, options, "ferry registry serve")


@contextlib.contextmanager
def running_registry(
    path: str | Path, api_keys: tuple[str, ...] = (), options: ServerOptions | None = None
) -> Iterator[str]:
    """Serve in a background thread on a free loopback port; yields the base URL and stops
    on exit."""
    options = options or ServerOptions(port=0, graceful_timeout_s=5.0)
    app = registry_app(path, api_keys)
    with running_in_thread(app, app.started, options) as url:
        yield url
