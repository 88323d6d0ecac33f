"""The KServe V2 (Open Inference Protocol) REST app: an ASGI callable over a Repository.

    app = ServeApp(Repository.open(Path("models/")), ServeSettings(api_keys=("s3cret",)))
    uvicorn.run(app, host="127.0.0.1", port=8000)      # or onnxferry.serve.server.serve(...)

Routes: /v2/health/live|ready, /v2,
/v2/models/{m}[/versions/{v}][/ready|/infer|/explain|/config|/stats], /v2/repository/index and
/v2/repository/models/{m}/load|unload (when enabled), /v2/systemsharedmemory/... (Triton's
system shared memory, shm.py; 403 unless enabled), /metrics and /openapi.json: the table in
routes.py, which the app dispatches on (each route's endpoint is one method here, but infer's:
``infer.Inference``, and explain's: ``explaining.Explaining``) and /openapi.json is rendered
from; with ``settings.sagemaker`` also SageMaker's /ping and /invocations
(``sagemaker.Invocations``). Every error is ``{"error": "..."}`` with the status the protocol
expects; the app never lets an exception escape to the connection.

/v2/health/ready is 200 when every model that should serve (all but unloaded ones) has a
version serving. An infer request is validated by the version that runs it, looked up once
its body has arrived; large bodies are inflated and parsed, and large outputs encoded, off the
event loop (see infer.py).

Memory: request bodies held at once (arriving, inflated, being served) are capped server-wide
at ``inflight_limit`` bytes (503 with Retry-After past it), and a response at ``response_limit``
bytes (400: the request is valid, its answer too large to send).

What the endpoints answer is theirs to share: ``server_metadata``, ``model_metadata``,
``model_config``, ``model_statistics``, ``change_repository``, ``not_ready``, ``authorize`` and
``inference.answer`` return data or raise HttpError, and the gRPC front (grpc_server.py) calls
the same methods over the same repository, metrics, keys and byte budget.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from ..errors import FerryError, InputError
from .asgi import (
    ByteBudget,
    Hold,
    HttpError,
    Receive,
    Scope,
    Send,
    read_body,
    respond,
    respond_error,
    respond_json,
)
from .catalog import ModelNotFound
from .endpoint import Call, Reply, cut, error_text, lookup
from .explaining import Explaining
from .infer import Inference
from .keys import check_bearer
from .metadata import model_metadata, triton_config
from .metrics import ServeMetrics
from .openapi import openapi_document
from .parsing import JsonParser
from .repository import Repository
from .routes import ROUTER, ROUTES, SAGEMAKER_ROUTER, SAGEMAKER_ROUTES, Auth
from .sagemaker import Invocations, ping
from .settings import ServeSettings as ServeSettings  # re-exported: callers import it from here
from .shm import SharedMemory
from .tensors import ProtocolError

SHM_BODY_LIMIT = 64 * 1024
"""Bytes a shared memory registration body may have (a key, an offset, a size)."""

log = logging.getLogger("onnxferry.serve")
access_log = logging.getLogger("onnxferry.serve.access")


class ServeApp:
    """ASGI app: ``await app(scope, receive, send)``; lifespan starts and stops the repository."""

    def __init__(
        self,
        repository: Repository,
        settings: ServeSettings | None = None,
        metrics: ServeMetrics | None = None,
    ) -> None:
        self.repository = repository
        self.settings = settings or ServeSettings()
        self.metrics = metrics or ServeMetrics()
        repository.metrics = self.metrics  # for what the repository counts (auto-rollbacks)
        sagemaker = self.settings.sagemaker
        self._router = SAGEMAKER_ROUTER if sagemaker else ROUTER
        self._keys = tuple(k.encode() for k in self.settings.api_keys)
        self._repo_keys = tuple(k.encode() for k in self.settings.repository_keys) or self._keys
        document = openapi_document(
            self.settings.server_version,
            api_keys=bool(self._keys),
            repository_keys=bool(self._repo_keys),
            routes=(*ROUTES, *SAGEMAKER_ROUTES) if sagemaker else ROUTES,
        )
        self._openapi = json.dumps(document).encode()
        self.started = asyncio.Event()
        if self.settings.inflight_bytes < self.settings.body_limit:
            raise InputError(
                f"inflight_limit ({self.settings.inflight_bytes} bytes) is below body_limit "
                f"({self.settings.body_limit} bytes): no request of the largest size could run"
            )
        self.inflight = ByteBudget(self.settings.inflight_bytes)
        self.parser = JsonParser(self.settings.parse_memory_bytes)
        self.shared_memory = SharedMemory(enabled=self.settings.shared_memory == "system")
        self.inference = Inference(
            repository,
            self.settings,
            self.metrics,
            self.inflight,
            self.parser,
            regions=self.shared_memory,
        )
        self._endpoints: dict[str, Callable[[Call], Awaitable[Reply]]] = {
            "live": self._live,
            "ready": self._ready,
            "server_metadata": self._server_metadata,
            "model_metadata": self._model_metadata,
            "model_ready": self._model_ready,
            "model_config": self._model_config,
            "model_stats": self._model_stats,
            "infer": self.inference,
            "explain": Explaining(self.inference),
            "repository_index": self._repository_index,
            "repository_load": self._repository_load,
            "repository_unload": self._repository_unload,
            "metrics": self._metrics,
            "openapi": self._openapi_json,
            "shm_status": self._shm_status,
            "shm_register": self._shm_register,
            "shm_unregister": self._shm_unregister,
            "ping": self._ping,
            "invocations": Invocations(repository, self.settings, self.inference, self.inflight),
        }
        missing = {route.endpoint for route in (*ROUTES, *SAGEMAKER_ROUTES)} - set(self._endpoints)
        if missing:
            raise RuntimeError(f"routes without an endpoint: {sorted(missing)}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    # --- lifespan ------------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.repository.start()
                except Exception as e:  # a broken repository: say why and do not serve
                    await send({"type": "lifespan.startup.failed", "message": str(e)})
                    return
                self.started.set()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.repository.stop()
                self.parser.close()
                self.shared_memory.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- requests ------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        path: str = scope["path"]
        method: str = scope["method"]
        status, model, version = 500, "", ""
        try:
            found = self._router.match(path)
            self._authorize(scope, found.auth)
            route = found.route(method)
            if route is None:
                if not found.routes:
                    raise HttpError(404, f"no route {path}; see /openapi.json", "not_found")
                text = f"method {method} is not allowed here; use {found.allowed}"
                raise HttpError(405, text, "method", ((b"allow", found.allowed.encode()),))
            call = Call(scope, receive, send, found.params)
            status, model, version = await self._endpoints[route.endpoint](call)
        except HttpError as e:
            model, version = e.model, e.version
            if e.model:
                self.metrics.failed(e.model, e.version or "-", e.reason)
            status = await respond_error(send, e.status, e.message, e.headers)
        except Exception:  # a bug: log it, answer 500, keep serving
            log.exception("internal error on %s %s", method, cut(path))
            status = await respond_error(send, 500, "internal server error; see the server log")
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(
                json.dumps(
                    {
                        "method": method,
                        "path": cut(path),
                        "status": status,
                        "model": cut(model) or None,
                        "version": cut(version) or None,
                        "ms": round((time.perf_counter() - start) * 1e3, 3),
                        "client": (scope.get("client") or ("", 0))[0],
                    }
                )
            )

    # --- endpoints: what answers each route of routes.ROUTES ------------------------------

    async def _live(self, call: Call) -> Reply:
        return await respond(call.send, 200, b"", "text/plain"), "", ""

    async def _ready(self, call: Call) -> Reply:
        why = self.not_ready()
        if why is not None:
            raise HttpError(400, f"not ready: {why}", "unavailable")
        return await respond(call.send, 200, b"", "text/plain"), "", ""

    async def _ping(self, call: Call) -> Reply:
        return await ping(self.not_ready(), call.send)

    async def _server_metadata(self, call: Call) -> Reply:
        return await respond_json(call.send, 200, self.server_metadata()), "", ""

    async def _model_metadata(self, call: Call) -> Reply:
        meta, version = self.model_metadata(call.model, call.version)
        return await respond_json(call.send, 200, meta), call.model, version

    async def _model_ready(self, call: Call) -> Reply:
        lookup(self.repository, call.model, call.version)
        return await respond(call.send, 200, b"", "text/plain"), call.model, call.version or ""

    async def _model_config(self, call: Call) -> Reply:
        config, version = self.model_config(call.model, call.version)
        return await respond_json(call.send, 200, config), call.model, version

    async def _model_stats(self, call: Call) -> Reply:
        stats = self.model_statistics(call.model, call.version)
        body = {"model_stats": stats}
        return await respond_json(call.send, 200, body), call.model, call.version or ""

    async def _repository_index(self, call: Call) -> Reply:
        return await respond_json(call.send, 200, self.repository.index()), "", ""

    async def _repository_load(self, call: Call) -> Reply:
        return await self._repository_change(call, self.repository.load)

    async def _repository_unload(self, call: Call) -> Reply:
        return await self._repository_change(call, self.repository.unload)

    async def _repository_change(
        self, call: Call, change: Callable[[str], Awaitable[None]]
    ) -> Reply:
        await self.change_repository(change, call.model)
        return await respond(call.send, 200, b"", "application/json"), "", ""

    async def _metrics(self, call: Call) -> Reply:
        body, content_type = self.metrics.render()
        return await respond(call.send, 200, body, content_type), "", ""

    async def _openapi_json(self, call: Call) -> Reply:
        return await respond(call.send, 200, self._openapi, "application/json"), "", ""

    async def _shm_status(self, call: Call) -> Reply:
        self._shm_on()
        status = _shm(self.shared_memory.status, call.params.get("region"))
        return await respond_json(call.send, 200, status), "", ""

    async def _shm_register(self, call: Call) -> Reply:
        self._shm_on()
        hold = Hold(self.inflight)
        try:
            body = await read_body(
                call.receive,
                dict(call.scope["headers"]),
                None,
                hold,
                limit=SHM_BODY_LIMIT,
                timeout_s=self.settings.body_timeout_s,
            )
        finally:
            hold.release()
        try:
            doc = json.loads(bytes(body))
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise HttpError(400, "register needs a JSON object: key, offset, byte_size", "")
        region = call.params["region"]
        register = self.shared_memory.register
        _shm(register, region, doc.get("key"), doc.get("offset", 0), doc.get("byte_size"))
        return await respond(call.send, 200, b"", "application/json"), "", ""

    async def _shm_unregister(self, call: Call) -> Reply:
        self._shm_on()
        _shm(self.shared_memory.unregister, call.params.get("region"))
        return await respond(call.send, 200, b"", "application/json"), "", ""

    def _shm_on(self) -> None:
        """403 while system shared memory is off, as the repository API."""
        if not self.shared_memory.enabled:
            text = "system shared memory is off; start the server with --shared-memory system"
            raise HttpError(403, text, "off")

    # --- answers, for every protocol (REST above, gRPC in grpc_server.py) -----------------

    def server_metadata(self) -> dict[str, Any]:
        """The server's name, version and protocol extensions."""
        extensions = ["binary_tensor_data", "statistics", "model_configuration"]
        if self.settings.repository_api:
            extensions.append("model_repository")
        if self.shared_memory.enabled:
            extensions.append("system_shared_memory")
        name, version = self.settings.server_name, self.settings.server_version
        return {"name": name, "version": version, "extensions": extensions}

    def model_metadata(self, name: str, version: str | None) -> tuple[dict[str, Any], str]:
        """A model's V2 metadata and the version it describes; HttpError 404 or 400."""
        served = lookup(self.repository, name, version)
        versions = self.repository.versions(name)
        return model_metadata(name, versions, served.executor.signature), served.version

    def model_config(self, name: str, version: str | None) -> tuple[dict[str, Any], str]:
        """A model's Triton configuration (model_config.proto as JSON) and its version."""
        served = lookup(self.repository, name, version)
        executor = served.executor
        config = triton_config(
            name,
            executor.signature,
            served.config,
            executor.batching,
            parallelism=(executor.instances, executor.threads),
        )
        return config, served.version

    def model_statistics(self, name: str, version: str | None) -> list[dict[str, Any]]:
        """Triton's statistics of the version, or of every version of the model."""
        try:
            versions = [version] if version else self.repository.versions(name)
        except ModelNotFound as e:
            raise HttpError(404, error_text(e), "not_found") from None
        stats = []
        for v in versions:
            served = lookup(self.repository, name, v)
            stats.append({**served.executor.statistics(), "name": name, "version": served.version})
        return stats

    async def change_repository(self, change: Callable[[str], Awaitable[None]], name: str) -> None:
        """``repository.load`` or ``unload`` of ``name``; HttpError 404 or 400 with why."""
        try:
            await change(name)
        except ModelNotFound as e:
            raise HttpError(404, error_text(e), "not_found") from None
        except FerryError as e:
            raise HttpError(400, error_text(e), "bad_request") from None

    def not_ready(self) -> str | None:
        """Why the server is not ready, or None when it is: every model that should serve (all
        but unloaded ones) has a version serving."""
        if not self.started.is_set():
            return "the models are still loading"
        unready = self.repository.unready()
        if not unready:
            return None
        name, reason = next(iter(unready.items()))
        more = f" (and {len(unready) - 1} more models)" if len(unready) > 1 else ""
        return f"model {name!r} serves no version: {reason}{more}"

    def authorize(self, auth: Auth, authorization: Sequence[bytes]) -> None:
        """HttpError 401 unless ``authorization`` (the Authorization headers' values, or gRPC's
        ``authorization`` metadata) is one key ``auth`` takes, when the server has such keys
        (``keys.check_bearer``); 403 for the repository API when it is off."""
        if auth == "open":
            return
        keys = self._keys if auth == "api" else self._repo_keys
        if keys:
            check_bearer(authorization, keys)
        if auth == "repository" and not self.settings.repository_api:
            text = "the repository API is off; start the server with --repository-api"
            raise HttpError(403, text, "off")

    # --- pieces --------------------------------------------------------------------------

    def _authorize(self, scope: Scope, auth: Auth) -> None:
        """``authorize`` with the request's Authorization header."""
        if auth != "open":
            self.authorize(auth, [v for k, v in scope["headers"] if k == b"authorization"])


T = TypeVar("T")


def _shm(action: Callable[..., T], *args: Any) -> T:
    """A shared memory registry call, its ProtocolError answered 400."""
    try:
        return action(*args)
    except ProtocolError as e:
        raise HttpError(400, error_text(e), "bad_request") from None
