"""The KServe V2 gRPC front (``inference.GRPCInferenceService``) beside REST, on its event loop.

    with running_grpc("model.onnx") as (url, target):     # REST base URL, gRPC "host:port"
        client = tritonclient.grpc.InferenceServerClient(target)
        assert client.is_server_ready()
    serve("models/", ServerOptions(port=8000, grpc_port=8001))  # `ferry serve --grpc-port 8001`

RPCs: ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelInfer (raw and
typed contents), ModelConfig, ModelStatistics, RepositoryIndex, RepositoryModelLoad and
RepositoryModelUnload; the others (streaming, shared memory, trace and log settings) answer
UNIMPLEMENTED. The messages are Triton's generated classes from tritonclient (the exact proto
its clients speak; see grpc_convert.py).

A thin adapter: every RPC calls what the REST endpoint calls (``ServeApp.model_config``,
``Inference.answer``, ...), so validation, the executor and its batcher, deadlines, the byte
budget for requests in flight, metrics, the access log and the API keys are the same. The
executor serves one event loop, so the grpc.aio server runs on uvicorn's (server.py starts it
before the app's lifespan and stops it with the HTTP server).

Keys: metadata ``authorization: Bearer KEY``, where REST takes the header; live and ready
are open, the repository RPCs take the repository keys and need ``--repository-api``.
Deadlines: the call's gRPC deadline is the request's, beside its ``timeout`` parameter and
the model's timeout_ms (the earliest wins). Limits: a message past ``max_message_bytes`` is
refused by gRPC itself (RESOURCE_EXHAUSTED), the request's bytes count against the app's
in-flight budget, a response against ``response_limit``. Errors carry REST's one-line
message, with the code that matches its status (``CODES``): 400 INVALID_ARGUMENT, 401
UNAUTHENTICATED, 403 PERMISSION_DENIED, 404 NOT_FOUND, 413 RESOURCE_EXHAUSTED, 503
UNAVAILABLE (a full budget: RESOURCE_EXHAUSTED), 504 DEADLINE_EXCEEDED, 500 INTERNAL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from ..errors import InputError, one_line
from . import grpc_convert as convert
from .app import ServeApp
from .asgi import Hold, HttpError
from .config import ModelConfig
from .endpoint import cut, lookup
from .keys import check_settings
from .protocol import InferRequest, decode_document
from .routes import Auth
from .server import (
    GRPC_MAX_MESSAGE_BYTES,
    ServerOptions,
    ShutdownGuard,
    build_app,
    running_in_thread,
)
from .settings import MIB, ServeSettings
from .versions import ModelVersion

log = logging.getLogger("onnxferry.serve")
access_log = logging.getLogger("onnxferry.serve.access")

R = TypeVar("R")

CODES: Mapping[str, Any] = {
    "not_found": grpc.StatusCode.NOT_FOUND,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
    "queue_full": grpc.StatusCode.UNAVAILABLE,
    "busy": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "too_large": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "response_too_large": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "deadline": grpc.StatusCode.DEADLINE_EXCEEDED,
    "auth": grpc.StatusCode.UNAUTHENTICATED,
    "off": grpc.StatusCode.PERMISSION_DENIED,
    "internal": grpc.StatusCode.INTERNAL,
}
"""The gRPC code of a failure, by the reason REST's HttpError carries (else by its status)."""
_BY_STATUS: Mapping[int, Any] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
_RESPONSE_SLACK = MIB
"""Bytes a response message may have past ``response_limit``: its tensors' names and shapes."""


def status_code(error: HttpError) -> Any:
    """The gRPC status code for a REST failure."""
    return CODES.get(error.reason) or _BY_STATUS.get(error.status, grpc.StatusCode.INTERNAL)


class GrpcFront:
    """The gRPC server over a ServeApp, on the event loop that runs the app: ``await start()``
    binds ``host:port`` (0: a free port, then ``self.port``) and serves; ``stop()`` stops taking
    calls and returns the task that ends once the calls in flight have finished (or after
    ``grace_s``, when they are cancelled). server.py's ``ShutdownGuard`` calls both."""

    def __init__(
        self,
        app: ServeApp,
        host: str,
        port: int,
        *,
        max_message_bytes: int | None = None,
        grace_s: float = 30.0,
        label: str = "ferry serve",
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.max_message_bytes = max_message_bytes or min(
            app.settings.body_limit, GRPC_MAX_MESSAGE_BYTES
        )
        self.grace_s = grace_s
        self.label = label
        self._server: Any = None
        self._stopping: asyncio.Future[None] | None = None

    @property
    def target(self) -> str:
        """``host:port`` for a client (``[host]:port`` for IPv6)."""
        return _address(self.host, self.port)

    async def start(self) -> None:
        """Bind and serve; InputError in one line when the address cannot be used."""
        settings = self.app.settings
        server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 0),  # a port in use is an error, not a shared port
                ("grpc.max_receive_message_length", self.max_message_bytes),
                (
                    "grpc.max_send_message_length",
                    min(settings.response_bytes + _RESPONSE_SLACK, GRPC_MAX_MESSAGE_BYTES),
                ),
            ]
        )
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(_Servicer(self.app), server)
        try:
            self.port = server.add_insecure_port(self.target)
        except RuntimeError:
            raise InputError(
                f"cannot listen for gRPC on {self.target} (in use, or not an address here)",
                hint="pick another --grpc-port, or stop what is using it",
            ) from None
        await server.start()
        self._server = server
        log.warning("%s: gRPC listening on %s", self.label, self.target)

    def stop(self) -> Awaitable[None]:
        """Stop taking calls; the task that ends when those in flight have (idempotent)."""
        if self._stopping is None:
            if self._server is None:
                self._stopping = asyncio.get_running_loop().create_future()
                self._stopping.set_result(None)
            else:
                self._stopping = asyncio.ensure_future(self._server.stop(self.grace_s))
        return self._stopping


@contextlib.contextmanager
def running_grpc(
    path: str | Path | ServeApp,
    options: ServerOptions | None = None,
    settings: ServeSettings | None = None,
    config: ModelConfig | None = None,
) -> Iterator[tuple[str, str]]:
    """REST and gRPC in a background thread, on free loopback ports unless ``options`` say
    otherwise; yields (REST base URL, gRPC target) and stops both (draining) on exit."""
    options = options or ServerOptions(port=0, grpc_port=0)
    if isinstance(path, ServeApp):
        check_settings(path.settings)
        app = path
    else:
        app = build_app(path, settings, config, options.poll_interval_s)
    front = GrpcFront(
        app,
        options.host,
        options.grpc_port or 0,
        max_message_bytes=options.grpc_max_message_bytes,
        grace_s=options.graceful_timeout_s,
    )
    with running_in_thread(ShutdownGuard(app, front), app.started, options, front) as url:
        yield url, front.target


# --- the service ---------------------------------------------------------------------------


@dataclass(eq=False)
class _Infer:
    """The gRPC exchange of ``Inference.answer``: the message converted and validated by the
    version that runs it, the outputs returned as a ModelInferResponse."""

    message: Any
    deadline: float | None
    response_limit: int

    async def receive(self, served: ModelVersion, hold: Hold) -> tuple[ModelVersion, InferRequest]:
        doc, data = convert.request_document(self.message)
        size = sum(len(r) for r in data.raw)
        if not data.raw:
            size += sum(t.contents.ByteSize() for t in self.message.inputs)
        hold.take(size)
        signature, allow = served.executor.signature, served.config.allow_nonfinite
        return served, decode_document(doc, signature, data, allow_nonfinite=allow)

    async def reply(
        self, name: str, version: str, request: InferRequest, outputs: Mapping[str, np.ndarray]
    ) -> Any:
        size = convert.response_bytes(outputs)
        if size > self.response_limit:
            text = (
                f"the response would be at least {size} bytes, past the limit of "
                f"{self.response_limit} bytes; send a smaller batch, or raise --max-response"
            )
            raise HttpError(400, text, "response_too_large")
        return convert.infer_response(name, version, request.id, outputs)


class _Servicer(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """Each RPC: the keys it needs, then the app's answer as a message; see the module
    docstring."""

    def __init__(self, app: ServeApp) -> None:
        self.app = app

    # --- health and metadata --------------------------------------------------------------

    async def ServerLive(self, request: Any, context: Any) -> Any:
        async def live() -> tuple[Any, str]:
            return service_pb2.ServerLiveResponse(live=True), ""

        return await self._call(context, "ServerLive", "open", "", live)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        async def ready() -> tuple[Any, str]:
            return service_pb2.ServerReadyResponse(ready=self.app.not_ready() is None), ""

        return await self._call(context, "ServerReady", "open", "", ready)

    async def ModelReady(self, request: Any, context: Any) -> Any:
        async def ready() -> tuple[Any, str]:
            try:
                served = lookup(self.app.repository, request.name, request.version or None)
            except HttpError:  # unknown or not ready: false, as REST's 4xx
                return service_pb2.ModelReadyResponse(ready=False), request.version
            return service_pb2.ModelReadyResponse(ready=True), served.version

        return await self._call(context, "ModelReady", "api", request.name, ready)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        async def metadata() -> tuple[Any, str]:
            return convert.server_metadata(self.app.server_metadata()), ""

        return await self._call(context, "ServerMetadata", "api", "", metadata)

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        async def metadata() -> tuple[Any, str]:
            meta, version = self.app.model_metadata(request.name, request.version or None)
            return convert.model_metadata(meta), version

        return await self._call(context, "ModelMetadata", "api", request.name, metadata)

    async def ModelConfig(self, request: Any, context: Any) -> Any:
        async def config() -> tuple[Any, str]:
            found, version = self.app.model_config(request.name, request.version or None)
            return convert.model_config(found), version

        return await self._call(context, "ModelConfig", "api", request.name, config)

    async def ModelStatistics(self, request: Any, context: Any) -> Any:
        async def statistics() -> tuple[Any, str]:
            version = request.version or None
            if request.name:
                stats = self.app.model_statistics(request.name, version)
            else:  # every model that serves, as Triton answers an empty name
                stats = []
                for name in self.app.repository.names():
                    with contextlib.suppress(HttpError):
                        stats += self.app.model_statistics(name, None)
            return convert.model_statistics(stats), request.version

        return await self._call(context, "ModelStatistics", "api", request.name, statistics)

    # --- the repository -------------------------------------------------------------------

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        async def index() -> tuple[Any, str]:
            return convert.repository_index(self.app.repository.index(), request.ready), ""

        return await self._call(context, "RepositoryIndex", "repository", "", index)

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        async def load() -> tuple[Any, str]:
            if request.parameters:
                text = (
                    "a load with a config or files is not supported; put them in the "
                    "repository (the model's ferry.toml), then load"
                )
                raise HttpError(400, text, "bad_request")
            repository = self.app.repository
            await self.app.change_repository(repository.load, request.model_name)
            return service_pb2.RepositoryModelLoadResponse(), ""

        rpc = "RepositoryModelLoad"
        return await self._call(context, rpc, "repository", request.model_name, load)

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        async def unload() -> tuple[Any, str]:  # unload_dependents: no ensembles here
            repository = self.app.repository
            await self.app.change_repository(repository.unload, request.model_name)
            return service_pb2.RepositoryModelUnloadResponse(), ""

        rpc = "RepositoryModelUnload"
        return await self._call(context, rpc, "repository", request.model_name, unload)

    # --- inference ------------------------------------------------------------------------

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        start = time.monotonic()
        name, version = request.model_name, request.model_version or None

        async def infer() -> tuple[Any, str]:
            remaining = context.time_remaining()
            deadline = None if remaining is None else start + remaining
            limit = self.app.settings.response_bytes
            exchange = _Infer(request, deadline, limit)
            return await self.app.inference.answer(name, version, exchange, start)

        return await self._call(context, "ModelInfer", "api", name, infer)

    # --- not served -------------------------------------------------------------------------

    async def ModelStreamInfer(self, request_iterator: Any, context: Any) -> Any:
        await _unimplemented(context, "streaming inference", "use ModelInfer")

    async def SystemSharedMemoryStatus(self, request: Any, context: Any) -> Any:
        await _unimplemented(context, "shared memory", "send tensors in the request")

    async def SystemSharedMemoryRegister(self, request: Any, context: Any) -> Any:
        await _unimplemented(context, "shared memory", "send tensors in the request")

    async def SystemSharedMemoryUnregister(self, request: Any, context: Any) -> Any:
        await _unimplemented(context, "shared memory", "send tensors in the request")

    async def CudaSharedMemoryStatus(self, request: Any, context: Any) -> Any:
        await _unimplemented(context, "CUDA shared memory", "send tensors in the request")

    async def CudaSharedMemoryRegister(self, request: Any, context: Any) -> Any:
        await _unimplemented(context, "CUDA shared memory", "send tensors in the request")

    async def CudaSharedMemoryUnregister(self, request: Any, context: Any) -> Any:
        await _unimplemented(context, "CUDA shared memory", "send tensors in the request")

    async def TraceSetting(self, request: Any, context: Any) -> Any:
        await _unimplemented(context, "trace settings", "see /metrics and the access log")

    async def LogSettings(self, request: Any, context: Any) -> Any:
        await _unimplemented(context, "log settings", "start ferry serve with --access-log")

    # --- pieces ---------------------------------------------------------------------------

    async def _call(
        self,
        context: Any,
        rpc: str,
        auth: Auth,
        model: str,
        answer: Callable[[], Awaitable[tuple[R, str]]],
    ) -> R:
        """``answer`` after the keys ``auth`` needs (and, past health, a started app); a
        failure aborts the call with its code and REST's one-line message. Every call is one
        line in the access log, written (and a failure counted) before the answer leaves."""
        start = time.perf_counter()
        try:
            metadata = context.invocation_metadata() or ()
            given = [v for k, v in metadata if k == "authorization"]
            self.app.authorize(auth, [v.encode() if isinstance(v, str) else v for v in given])
            if auth != "open" and not self.app.started.is_set():
                raise HttpError(503, "the models are still loading; retry", "unavailable")
            message, version = await answer()
        except HttpError as e:
            code = status_code(e)
            if e.model:
                self.app.metrics.failed(e.model, e.version or "-", e.reason)
            _log_access(context, rpc, code, model, e.version, start)
            await context.abort(code, e.message)
            raise  # abort raises; not reached
        except asyncio.CancelledError:  # the client went away, or its deadline passed
            _log_access(context, rpc, grpc.StatusCode.CANCELLED, model, "", start)
            raise
        except Exception as e:
            if _is_abort(e):
                raise
            log.exception("internal error on gRPC %s", rpc)
            _log_access(context, rpc, grpc.StatusCode.INTERNAL, model, "", start)
            text = "internal server error; see the server log"
            await context.abort(grpc.StatusCode.INTERNAL, text)
            raise
        _log_access(context, rpc, grpc.StatusCode.OK, model, version, start)
        return message


async def _unimplemented(context: Any, what: str, hint: str) -> None:
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"this server has no {what}; {hint}")


def _is_abort(error: Exception) -> bool:
    """Whether ``error`` is grpc.aio's own way out of ``context.abort``."""
    return isinstance(error, grpc.aio.AbortError)


def _log_access(context: Any, rpc: str, code: Any, model: str, version: str, start: float) -> None:
    if not access_log.isEnabledFor(logging.INFO):
        return
    access_log.info(
        json.dumps(
            {
                "protocol": "grpc",
                "method": rpc,
                "status": code.name,
                "model": cut(model) or None,
                "version": cut(version or "") or None,
                "ms": round((time.perf_counter() - start) * 1e3, 3),
                "client": _client(context.peer() or ""),
            }
        )
    )


def _client(peer: str) -> str:
    """The client's address from a gRPC peer ("ipv4:127.0.0.1:5000" -> "127.0.0.1")."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    return rest.rpartition(":")[0] if kind == "ipv4" else one_line(peer, 100)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
