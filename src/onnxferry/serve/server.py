"""Run the app on uvicorn (httptools, uvloop): bind, serve, drain on SIGTERM, exit 0.

    serve("models/", ServerOptions(port=8000))          # blocks; Ctrl+C / SIGTERM drain and stop
    with running("model.onnx") as url:                  # a background server (tests, notebooks)
        requests.get(f"{url}/v2/health/ready")

Slow clients cannot hold the server: headers must arrive within ``header_timeout_s`` of the
first byte (else 408 and the connection closes), bodies within the app's body timeout, and an
idle keep-alive connection closes after ``keep_alive_s`` (bytes that start no request do not
delay it), and a response the client stops reading for ``write_timeout_s`` is dropped. Past
``max_connections`` open connections, or ``max_connections_per_client`` from one address, a
new one gets 503 and closes. Requests still running after ``graceful_timeout_s`` at shutdown
get a JSON 503. Big ones cannot fill its memory: a
request's line and headers must fit ``max_header_bytes`` and ``max_headers`` (else 431 and the
connection closes), bodies the app's body limit.

API keys must be at least ``MIN_KEY_LENGTH`` printable characters; ``read_keys`` and
``env_keys`` take them from a file or an environment variable:

    serve("models/", settings=ServeSettings(api_keys=read_keys("/run/secrets/ferry-keys")))
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import socket
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, UsageError
from .app import ServeApp, ServeSettings
from .config import ModelConfig
from .repository import Repository

log = logging.getLogger("onnxferry.serve")

MIN_KEY_LENGTH = 16
LINGER_S = 2.0
"""After a 431 the server reads and drops what the client still sends for this long before it
closes, so that the client reads the answer rather than a connection reset."""


@dataclass(frozen=True)
class ServerOptions:
    """How the server listens and stops."""

    host: str = "127.0.0.1"
    port: int = 8000
    header_timeout_s: float = 10.0
    keep_alive_s: float = 5.0
    graceful_timeout_s: float = 30.0
    """In-flight requests get this long to finish after SIGTERM."""
    poll_interval_s: float | None = None
    """Scan the repository for new versions this often (None: only the load API reloads)."""
    log_level: str = "warning"
    max_header_bytes: int = 64 * 1024
    """A request's line and headers together; past it: 431 and the connection closes."""
    max_headers: int = 100
    """Header fields in one request; past it: 431 and the connection closes."""
    write_timeout_s: float = 30.0
    """A response the client stops reading for this long: the connection is dropped."""
    max_connections: int = 1000
    """Open connections in all; past it a new one gets 503 and is closed."""
    max_connections_per_client: int = 100
    """Open connections from one IP address; past it a new one gets 503 and is closed."""

    def __post_init__(self) -> None:
        counts = (
            "max_header_bytes",
            "max_headers",
            "max_connections",
            "max_connections_per_client",
        )
        for name in counts:
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise UsageError(f"ServerOptions.{name} must be a positive integer, got {value!r}")
        for name in ("header_timeout_s", "keep_alive_s", "write_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise UsageError(f"ServerOptions.{name} must be a positive number, got {value!r}")


def build_app(
    path: str | Path,
    settings: ServeSettings | None = None,
    config: ModelConfig | None = None,
    poll_interval_s: float | None = None,
) -> ServeApp:
    """The app over ``path`` (one .onnx file or a Triton-layout repository); refuses bad API
    keys before it opens anything."""
    if settings is not None:
        check_settings(settings)
    repository = Repository.open(Path(path), poll_interval_s=poll_interval_s, config=config)
    return ServeApp(repository, settings)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or one clear line when the address cannot be used."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise InputError(f"cannot resolve --host {host!r} ({e.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise InputError(
            f"cannot listen on {host}:{port} ({e.strerror})",
            hint="pick another --port, or stop what is using it",
        ) from None
    sock.set_inheritable(True)
    return sock


def serve(
    path: str | Path,
    options: ServerOptions | None = None,
    settings: ServeSettings | None = None,
    config: ModelConfig | None = None,
) -> int:
    """Serve until SIGTERM or SIGINT, finishing in-flight requests first; returns 0."""
    options = options or ServerOptions()
    app = build_app(path, settings, config, options.poll_interval_s)
    sock = bind(options.host, options.port)
    server = _server(app, options)
    host, port = sock.getsockname()[:2]
    log.warning("ferry serve: listening on http://%s:%s", host, port)
    # A signal before uvicorn installs its handlers stops the server once it has started;
    # the one uvicorn re-raises after its graceful shutdown changes nothing. Either way the
    # process ends with status 0 instead of the default "killed by SIGTERM".
    stop = functools.partial(_stop, server)
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
    if not app.started.is_set():
        raise InputError("the server did not start; see the log above")
    return 0


@contextlib.contextmanager
def running(
    path: str | Path | ServeApp,
    options: ServerOptions | None = None,
    settings: ServeSettings | None = None,
    config: ModelConfig | None = None,
) -> Iterator[str]:
    """Serve in a background thread on a free loopback port; yields the base URL and stops
    (draining) on exit."""
    options = options or ServerOptions(port=0)
    if isinstance(path, ServeApp):
        check_settings(path.settings)
        app = path
    else:
        app = build_app(path, settings, config, options.poll_interval_s)
    sock = bind(options.host, options.port)
    server = _server(app, options)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not app.started.is_set():
            if not thread.is_alive():
                raise InputError("the server did not start; see the log")
            thread.join(0.01)
        host, port = sock.getsockname()[:2]
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(options.graceful_timeout_s + 10)
        sock.close()


def read_keys(path: str | Path) -> tuple[str, ...]:
    """API keys from a file, one a line; blank lines and lines starting with # are skipped:

        ServeSettings(api_keys=read_keys("/run/secrets/ferry-keys"))

    Refuses a file every user may read, one without a key, and bad keys (naming the line,
    never the key)."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise InputError(f"cannot read the key file {path} ({reason})") from None
    if os.name == "posix" and mode & stat.S_IROTH:
        raise InputError(
            f"the key file {path} can be read by every user (mode {stat.S_IMODE(mode):o})",
            hint=f"chmod o-r {path} (a Kubernetes secret: defaultMode 0440)",
        )
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        key = line.strip()
        if key and not key.startswith("#"):
            keys.append(check_key(key, f"{path} line {number}"))
    if not keys:
        raise InputError(
            f"the key file {path} holds no key", hint="one key a line; # starts a comment"
        )
    return tuple(keys)


def env_keys(name: str) -> tuple[str, ...]:
    """API keys from an environment variable, separated by whitespace:

        ServeSettings(api_keys=env_keys("FERRY_KEYS"))

    Refuses a variable that is not set or empty (a key that went missing must not let
    requests through), and bad keys."""
    value = os.environ.get(name)
    if value is None:
        raise InputError(f"the environment variable {name} is not set")
    if not value.strip():
        raise InputError(f"the environment variable {name} is empty")
    return tuple(check_key(key, f"${name}") for key in value.split())


def check_settings(settings: ServeSettings) -> None:
    """Refuse keys that are empty (``Authorization: Bearer`` alone would match them), short
    or unprintable, in one line naming the setting."""
    check_keys(settings.api_keys, "api_keys")
    check_keys(settings.repository_keys, "repository_keys")


def check_keys(keys: tuple[str, ...], source: str) -> tuple[str, ...]:
    """``keys`` when each is a usable API key; else one line naming ``source``."""
    return tuple(check_key(key, source) for key in keys)


def check_key(key: str, source: str) -> str:
    """``key`` when it is at least MIN_KEY_LENGTH printable ASCII characters without spaces;
    else one line naming ``source`` (never the key)."""
    hint = "generate one with: openssl rand -hex 32"
    if not key.strip():
        raise InputError(
            f"{source}: the key is empty; a key needs at least {MIN_KEY_LENGTH} characters",
            hint=hint,
        )
    if not (key.isascii() and key.isprintable()) or " " in key:
        raise InputError(
            f"{source}: the key has a space, a control or a non-ASCII character; "
            "keys are printable ASCII",
            hint=hint,
        )
    if len(key) < MIN_KEY_LENGTH:
        raise InputError(
            f"{source}: the key has {len(key)} characters; a key needs at least {MIN_KEY_LENGTH}",
            hint=hint,
        )
    return key


def _server(app: ServeApp, options: ServerOptions) -> Any:
    import uvicorn

    config = uvicorn.Config(
        ShutdownGuard(app),
        http=_guarded_protocol(options),
        loop="uvloop" if _has_uvloop() else "asyncio",
        lifespan="on",
        log_level=options.log_level,
        access_log=False,  # the app writes its own structured access log
        timeout_keep_alive=options.keep_alive_s,  # type: ignore[arg-type]  # a float works
        timeout_graceful_shutdown=int(options.graceful_timeout_s),
        server_header=False,
    )
    return uvicorn.Server(config)


def _guarded_protocol(options: ServerOptions) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with the limits uvicorn lacks: a request's headers must
    arrive within header_timeout_s of its first byte (else 408) and fit max_header_bytes and
    max_headers (else 431); either way the connection closes. Bytes after a response that
    start no request do not stop the keep-alive timeout; a response the client stops reading
    for write_timeout_s is dropped; a connection past max_connections in all or
    max_connections_per_client from its address gets 503 and closes."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    write_timeout_s = options.write_timeout_s
    timeout_s, max_bytes, max_count = (
        options.header_timeout_s,
        options.max_header_bytes,
        options.max_headers,
    )
    caps = ConnectionCaps(options.max_connections, options.max_connections_per_client)

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _timer: asyncio.TimerHandle | None = None
        """The headers' deadline, or the end of the linger after a 431."""
        _header_bytes: int | None = 0
        """Bytes of the request being read while its headers are; None while its body is. A
        request that starts in the read that ends the one before is counted from the next read
        (pipelining), so it may hold up to twice the cap."""
        _header_count = 0
        _refused = False
        _peer: str | None = None
        """The client's address while it counts against the caps."""
        _idle: asyncio.TimerHandle | None = None
        """The keep-alive timer, held while a read is parsed: only a new request stops it."""
        _stalled: asyncio.TimerHandle | None = None
        """The deadline for the client to read more of a response."""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            peer = self.client[0] if self.client else ""
            refusal = caps.admit(peer)
            if refusal is not None:
                self._turn_away(refusal)
                return
            self._peer = peer
            self._arm()

        def data_received(self, data: bytes) -> None:
            self._idle, self.timeout_keep_alive_task = self.timeout_keep_alive_task, None
            try:
                self._feed(data)
            finally:
                if self._idle is not None and self.timeout_keep_alive_task is None:
                    self.timeout_keep_alive_task = self._idle
                self._idle = None

        def _feed(self, data: bytes) -> None:
            # httptools holds a header in memory until it ends, however long it grows: it is
            # fed no more than what is left of the cap.
            while data and self._reading():
                if self._header_bytes is None:
                    super().data_received(data)
                    return
                room = max_bytes - self._header_bytes
                piece, data = (data, b"") if len(data) <= room else (data[:room], data[room:])
                self._header_bytes += len(piece)
                super().data_received(piece)
                if self._refused or self._header_bytes is None:
                    continue
                if self._header_bytes >= max_bytes:
                    self._refuse(f"request headers exceed {max_bytes} bytes")
                elif self._header_count > max_count:
                    self._refuse(f"more than {max_count} request headers")

        def on_message_begin(self) -> None:
            if self._idle is not None:
                self._idle.cancel()
                self._idle = None
            super().on_message_begin()
            self._header_count = 0
            if self._timer is None and not self._refused:
                self._arm()

        def on_header(self, name: bytes, value: bytes) -> None:
            self._header_count += 1
            if self._header_count <= max_count:
                super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._header_bytes = None
            if self._refused:
                return
            self._disarm()
            if self._header_count > max_count:
                self._refuse(f"more than {max_count} request headers")
            else:
                super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            if not self._refused:
                super().on_body(body)

        def on_message_complete(self) -> None:
            self._header_bytes = 0
            if not self._refused:
                super().on_message_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._stalled is not None:
                self._stalled.cancel()
            if self._peer is not None:
                caps.release(self._peer)
                self._peer = None
            super().connection_lost(exc)

        def eof_received(self) -> None:
            if self._refused and not self.transport.is_closing():
                self.transport.close()  # a refused client read the answer and left

        def pause_writing(self) -> None:
            super().pause_writing()
            if self._stalled is None:
                self._stalled = self.loop.call_later(write_timeout_s, self._write_too_slow)

        def resume_writing(self) -> None:
            super().resume_writing()
            if self._stalled is not None:
                self._stalled.cancel()
                self._stalled = None

        def _write_too_slow(self) -> None:
            self._stalled = None
            log.warning("ferry serve: dropped a client that stopped reading its response")
            self.transport.abort()

        def _reading(self) -> bool:
            """Not refused, not closing, not handed over to a WebSocket protocol."""
            transport = self.transport
            return not (
                self._refused or transport.is_closing() or transport.get_protocol() is not self
            )

        def _arm(self) -> None:
            self._timer = self.loop.call_later(timeout_s, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _headers_too_slow(self) -> None:
            self._timer = None
            if not self.transport.is_closing():
                _answer(
                    self.transport, b"408 Request Timeout", "request headers did not arrive in time"
                )
                self.transport.close()

        def _turn_away(self, message: str) -> None:
            """Answer 503 on a connection past a cap and close it; it never counts."""
            self._refused = True
            _answer(self.transport, b"503 Service Unavailable", message)
            self._linger()

        def _linger(self) -> None:
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self._timer = self.loop.call_later(LINGER_S, self.transport.close)

        def _refuse(self, message: str) -> None:
            """Answer 431 and close; read and drop what follows until then."""
            self._refused = True
            self._disarm()
            if self.pipeline or (self.cycle is not None and not self.cycle.response_complete):
                self.transport.close()  # the answer would cut into an earlier one
                return
            _answer(self.transport, b"431 Request Header Fields Too Large", message)
            self._linger()

    return GuardedHttpToolsProtocol


class ConnectionCaps:
    """Counts open connections, in all and by client address, on one event loop:

    refusal = caps.admit("10.0.0.7")   # None: admitted, release it when it closes
    caps.release("10.0.0.7")
    """

    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self.open: dict[str, int] = {}
        self.count = 0

    def admit(self, peer: str) -> str | None:
        """Count a new connection from ``peer``; or, past a cap, why not (the address is not
        in the text)."""
        if self.count >= self.total:
            log.warning("ferry serve: refused a connection: %d open", self.count)
            return f"too many open connections (at most {self.total})"
        if self.open.get(peer, 0) >= self.per_client:
            log.warning("ferry serve: refused a connection from %s: at its cap", peer)
            return f"too many open connections from this client (at most {self.per_client})"
        self.open[peer] = self.open.get(peer, 0) + 1
        self.count += 1
        return None

    def release(self, peer: str) -> None:
        """Uncount a connection that ``admit`` counted."""
        self.count -= 1
        left = self.open[peer] - 1
        if left:
            self.open[peer] = left
        else:
            del self.open[peer]


class ShutdownGuard:
    """The ASGI app that answers a request still running when the graceful timeout ends (the
    server cancels it) with a JSON 503 instead of uvicorn's 500 and traceback:

    uvicorn.Config(ShutdownGuard(app), ...)
    """

    def __init__(self, app: ServeApp) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Any) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except asyncio.CancelledError:
            if not started:
                await _send_json(send, 503, "the server is shutting down")
            # a response already under way is cut off by closing the connection


async def _send_json(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _answer(transport: asyncio.Transport, status: bytes, message: str) -> None:
    """Write a whole ``{"error": message}`` response that closes the connection."""
    body = json.dumps({"error": message}).encode()
    transport.write(
        b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n%s" % (status, len(body), body)
    )


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def _stop(server: Any, signum: int, frame: Any) -> None:
    """Signal handler around uvicorn's own: stop (again) once it runs."""
    server.should_exit = True
