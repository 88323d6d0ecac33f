"""Run the app on uvicorn (httptools, uvloop): bind, serve, drain on SIGTERM, exit 0.

    serve("models/", port=8000)                         # blocks; Ctrl+C / SIGTERM drain and stop
    with running("model.onnx") as url:                  # a background server (tests, notebooks)
        requests.get(f"{url}/v2/health/ready")

Slow clients cannot hold the server: headers must arrive within ``header_timeout_s`` of the
first byte (else 408 and the connection closes), bodies within the app's body timeout, and an
idle keep-alive connection closes after ``keep_alive_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from .app import ServeApp, ServeSettings
from .config import ModelConfig
from .repository import Repository

log = logging.getLogger("onnxferry.serve")


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


def build_app(
    path: str | Path,
    settings: ServeSettings | None = None,
    config: ModelConfig | None = None,
    poll_interval_s: float | None = None,
) -> ServeApp:
    """The app over ``path`` (one .onnx file or a Triton-layout repository)."""
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
    app = (
        path
        if isinstance(path, ServeApp)
        else build_app(path, settings, config, options.poll_interval_s)
    )
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


def _server(app: ServeApp, options: ServerOptions) -> Any:
    import uvicorn

    config = uvicorn.Config(
        app,
        http=_guarded_protocol(options.header_timeout_s),
        loop="uvloop" if _has_uvloop() else "asyncio",
        lifespan="on",
        log_level=options.log_level,
        access_log=False,  # the app writes its own structured access log
        timeout_keep_alive=int(max(1, options.keep_alive_s)),
        timeout_graceful_shutdown=int(options.graceful_timeout_s),
        server_header=False,
    )
    return uvicorn.Server(config)


def _guarded_protocol(header_timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol, closing connections whose headers do not arrive in time
    (uvicorn itself waits forever for a request's headers)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._header_timer is None:
                self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._header_timer = self.loop.call_later(header_timeout_s, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                message = b'{"error": "request headers did not arrive in time"}'
                self.transport.write(
                    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(message), message)
                )
                self.transport.close()

    return GuardedHttpToolsProtocol


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def _stop(server: Any, signum: int, frame: Any) -> None:
    """Signal handler around uvicorn's own: stop (again) once it runs."""
    server.should_exit = True
