"""Run the app on uvicorn (httptools, uvloop): bind, serve, drain on SIGTERM, exit 0.

    serve("models/", ServerOptions(port=8000))          # blocks; Ctrl+C / SIGTERM drain and stop
    serve("models/", ServerOptions(port=8000, grpc_port=8001))    # and KServe V2 gRPC beside it
    with running("model.onnx") as url:                  # a background server (tests, notebooks)
        requests.get(f"{url}/v2/health/ready")

Slow clients cannot hold the server: headers must arrive within ``header_timeout_s`` of the
first byte (else 408 and the connection closes), bodies within the app's body timeout, and an
idle keep-alive connection closes after ``keep_alive_s`` (bytes that start no request do not
delay it), and a response the client stops reading for ``write_timeout_s`` is dropped. Past
``max_connections`` open connections, or ``max_connections_per_client`` from one address, a
new one gets 503 and closes. Requests still running after ``graceful_timeout_s`` at shutdown
get a JSON 503. Big ones cannot fill its memory: a request's line and headers must fit
``max_header_bytes`` and ``max_headers`` (else 431 and the connection closes), bodies the app's
body limit. The HTTP protocol that enforces the connection-level limits is in connections.py.

With ``grpc_port`` the gRPC front (grpc_server.py) runs on the same event loop: it starts
before the app's lifespan (a port in use stops the start-up before any model loads), stops
taking calls when the HTTP server begins its shutdown, and its calls in flight finish before
the models stop. Its messages are limited to ``grpc_max_message_bytes`` (default: the app's
body limit).

``"registry:DIR"`` serves a model registry's aliased versions (registry_source.py, with a
``RegistryOptions``). API keys are checked before anything is opened (keys.py, whose
``read_keys`` and ``env_keys`` take them from a file or an environment variable), and so is
the public key of ``ServeSettings.require_signature`` (every version must then verify against
its signature).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import signal
import socket
import threading
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import InputError, UsageError, one_line
from ..graphs import PROTOBUF_MAX
from .app import ServeApp
from .busypoll import BusyPoll
from .config import ModelConfig
from .connections import ConnectionCaps, guarded_protocol
from .keys import check_settings
from .repository import Repository
from .settings import ServeSettings, check_positive

if TYPE_CHECKING:
    from .registry_source import RegistryOptions


class Started(Protocol):
    """What an app sets once its lifespan has started (an asyncio or threading Event)."""

    def is_set(self) -> bool: ...


class Listener(Protocol):
    """A second front on the server's event loop (gRPC: grpc_server.GrpcFront): started
    before the app's lifespan, told to stop when the server begins its shutdown, and awaited
    before the app stops."""

    async def start(self) -> None: ...

    def stop(self) -> Awaitable[None]:
        """Stop taking calls; what ends when those in flight have (the same each call)."""
        ...


log = logging.getLogger("onnxferry.serve")

REGISTRY = "registry:"
"""The prefix of a registry to serve: ``registry:DIR``."""


GRPC_MAX_MESSAGE_BYTES = PROTOBUF_MAX
"""gRPC's largest message limit: a message is a protobuf."""


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
    grpc_port: int | None = None
    """Also serve KServe V2 gRPC on this port (0: a free one, logged); None: no gRPC."""
    grpc_max_message_bytes: int | None = None
    """The largest gRPC request message (None: the app's body limit)."""
    busy_poll_us: float = 0.0
    """Keep the event loop polling, not sleeping, this long after the last HTTP response
    (busypoll.py: lower latency for back-to-back requests, up to a core's time); 0: off."""

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
        poll = self.busy_poll_us
        if isinstance(poll, bool) or not isinstance(poll, (int, float)) or not poll >= 0:
            raise UsageError(f"ServerOptions.busy_poll_us must be 0 or more, got {poll!r}")
        if poll:
            check_positive("ServerOptions.busy_poll_us", poll)
        port, size = self.grpc_port, self.grpc_max_message_bytes
        if port is not None and (type(port) is not int or not 0 <= port <= 65535):
            raise UsageError(f"ServerOptions.grpc_port must be a port (0-65535), got {port!r}")
        if port and port == self.port:
            raise UsageError(f"the gRPC port and the HTTP port are both {port}; pick two")
        if size is not None and (type(size) is not int or not 0 < size <= GRPC_MAX_MESSAGE_BYTES):
            raise UsageError(
                f"the gRPC message limit must be from 1 to {GRPC_MAX_MESSAGE_BYTES} bytes "
                f"(gRPC's own), got {size!r}",
                hint="--grpc-max-message-bytes N",
            )
        if type(self.port) is not int or not 0 <= self.port <= 65535:
            raise UsageError(f"ServerOptions.port must be a port (0-65535), got {self.port!r}")


def build_app(
    path: str | Path,
    settings: ServeSettings | None = None,
    config: ModelConfig | None = None,
    poll_interval_s: float | None = None,
    registry: RegistryOptions | None = None,
) -> ServeApp:
    """The app over ``path`` (one .onnx file, a Triton-layout repository, or
    ``"registry:DIR"``: a model registry, served with ``registry``'s options); refuses bad API
    keys and an unusable ``require_signature`` public key before it opens anything."""
    if settings is not None:
        check_settings(settings)
    public_key = settings.require_signature if settings is not None else None
    repository: Repository
    if isinstance(path, str) and path.startswith(REGISTRY):
        from .registry_source import RegistryOptions, RegistryRepository

        source = path.removeprefix(REGISTRY)
        options = registry or RegistryOptions()
        repository = RegistryRepository.open(
            source,
            poll_interval_s=poll_interval_s,
            config=config,
            public_key=public_key,
            alias=options.alias,
            key_file=options.key_file,
            rollback=options.rollback,
        )
    elif registry is not None:
        raise UsageError(
            f"registry options apply to a registry, not to {path}", hint="serve registry:DIR"
        )
    else:
        repository = Repository.open(
            Path(path), poll_interval_s=poll_interval_s, config=config, public_key=public_key
        )
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
    registry: RegistryOptions | None = None,
    *,
    stopped: threading.Event | None = None,
) -> int:
    """Serve until SIGTERM or SIGINT, finishing in-flight requests first; returns 0.
    ``stopped`` already set when the server takes over the signals (a SIGTERM during the
    start-up that a library swallowed) returns 0 at once."""
    options = options or ServerOptions()
    app = build_app(path, settings, config, options.poll_interval_s, registry)
    front = grpc_front(app, options)
    guard = ShutdownGuard(app, front)
    return run_until_signal(guard, app.started, options, "ferry serve", front, stopped=stopped)


def grpc_front(app: ServeApp, options: ServerOptions) -> Listener | None:
    """The gRPC front ``options.grpc_port`` asks for (None without one); a one-line error
    when grpcio is missing or the port is in use, before any model loads."""
    if options.grpc_port is None:
        return None
    try:
        from .grpc_server import GrpcFront
    except (ImportError, RuntimeError) as e:  # tritonclient.grpc: RuntimeError without grpcio
        missing = (e.name if isinstance(e, ImportError) and e.name else "grpc").split(".")[0]
        raise UsageError(
            f"gRPC needs {'grpcio' if missing == 'grpc' else missing}, which is not installed",
            hint="pip install 'onnxferry[serve]'",
        ) from None
    if options.grpc_port:
        try:
            bind(options.host, options.grpc_port).close()
        except InputError as e:
            hint = "pick another --grpc-port, or stop what is using it"
            raise InputError(f"gRPC: {e.message}", hint=hint) from None
    return GrpcFront(
        app,
        options.host,
        options.grpc_port,
        max_message_bytes=options.grpc_max_message_bytes,
        grace_s=options.graceful_timeout_s,
    )


def run_until_signal(
    app: Any,
    started: Started,
    options: ServerOptions,
    label: str,
    listener: Listener | None = None,
    *,
    stopped: threading.Event | None = None,
) -> int:
    """Run the ASGI ``app`` (whose lifespan sets ``started``) under uvicorn with the guarded
    HTTP protocol until SIGTERM or SIGINT, finishing in-flight requests first; returns 0.
    ``listener`` (whose lifespan ``app`` runs, see ShutdownGuard) stops with the server;
    ``stopped`` set by the time its signal handlers are in returns 0 without serving."""
    sock = bind(options.host, options.port)
    server = _server(app, options, listener)
    host, port = sock.getsockname()[:2]
    log.warning("%s: listening on http://%s:%s", label, host, port)
    # A signal before uvicorn installs its handlers stops the server once it has started;
    # the one uvicorn re-raises after its graceful shutdown changes nothing. Either way the
    # process ends with status 0 instead of the default "killed by SIGTERM".
    stop = functools.partial(_stop, server)
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if stopped is not None and stopped.is_set():
            return 0
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
    if not started.is_set():
        raise InputError("the server did not start; see the log above")
    return 0


@contextlib.contextmanager
def running(
    path: str | Path | ServeApp,
    options: ServerOptions | None = None,
    settings: ServeSettings | None = None,
    config: ModelConfig | None = None,
    registry: RegistryOptions | None = None,
) -> Iterator[str]:
    """Serve in a background thread on a free loopback port; yields the base URL and stops
    (draining) on exit."""
    options = options or ServerOptions(port=0)
    if isinstance(path, ServeApp):
        check_settings(path.settings)
        app = path
    else:
        app = build_app(path, settings, config, options.poll_interval_s, registry)
    front = grpc_front(app, options)
    with running_in_thread(ShutdownGuard(app, front), app.started, options, front) as url:
        yield url


@contextlib.contextmanager
def running_in_thread(
    app: Any, started: Started, options: ServerOptions, listener: Listener | None = None
) -> Iterator[str]:
    """Run the ASGI ``app`` (whose lifespan sets ``started``) in a background thread; yields
    its base URL and stops it (draining) on exit, ``listener`` with it."""
    sock = bind(options.host, options.port)
    server = _server(app, options, listener)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not started.is_set():
            if not thread.is_alive():
                raise InputError("the server did not start; see the log")
            thread.join(0.01)
        host, port = sock.getsockname()[:2]
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(options.graceful_timeout_s + 10)
        sock.close()


def _server(app: Any, options: ServerOptions, listener: Listener | None = None) -> Any:
    import uvicorn

    if options.busy_poll_us:
        app = BusyPoll(app, options.busy_poll_us)
    config = uvicorn.Config(
        app,
        http=guarded_protocol(
            header_timeout_s=options.header_timeout_s,
            max_header_bytes=options.max_header_bytes,
            max_headers=options.max_headers,
            write_timeout_s=options.write_timeout_s,
            caps=ConnectionCaps(options.max_connections, options.max_connections_per_client),
        ),
        loop="uvloop" if _has_uvloop() else "asyncio",
        ws="none",  # V2 has no websockets; "auto" imports whichever websockets is installed
        lifespan="on",
        # uvicorn's own logging config would run logging.config.dictConfig, which closes every
        # handler of the process it starts in: a caller's file handler, absl's (TensorFlow's)
        # on the stream pytest or the caller swapped in. Its loggers propagate instead.
        log_config=None,
        log_level=options.log_level,
        access_log=False,  # the app writes its own structured access log
        timeout_keep_alive=options.keep_alive_s,  # type: ignore[arg-type]  # a float works
        timeout_graceful_shutdown=int(options.graceful_timeout_s),
        server_header=False,
    )
    if listener is None:
        return uvicorn.Server(config)
    front: Listener = listener

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            front.stop()  # no new calls from now on, while HTTP drains
            await super().shutdown(sockets)

    return Server(config)


class ShutdownGuard:
    """The ASGI app that answers a request still running when the graceful timeout ends (the
    server cancels it) with a JSON 503 instead of uvicorn's 500 and traceback, and runs a
    ``listener``'s lifespan around the app's (started first; stopped, its calls drained,
    before the app stops):

    uvicorn.Config(ShutdownGuard(app, listener=None), ...)
    """

    def __init__(self, app: ServeApp, listener: Listener | None = None) -> None:
        self.app = app
        self.listener = listener

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan" and self.listener is not None:
            await self._lifespan(self.listener, scope, receive, send)
            return
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

    async def _lifespan(self, listener: Listener, scope: Any, receive: Any, send: Any) -> None:
        first = await receive()
        if first["type"] == "lifespan.startup":
            try:
                await listener.start()
            except Exception as e:  # cannot listen: say why, and load nothing
                await send({"type": "lifespan.startup.failed", "message": one_line(e)})
                return
        pending = [first]

        async def received() -> Any:
            if pending:
                return pending.pop()
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await listener.stop()
            return message

        async def sent(message: Any) -> None:
            if message["type"] == "lifespan.startup.failed":
                await listener.stop()
            await send(message)

        await self.app(scope, received, sent)


async def _send_json(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def _stop(server: Any, signum: int, frame: Any) -> None:
    """Signal handler around uvicorn's own: stop (again) once it runs."""
    server.should_exit = True
