"""The KServe V2 (Open Inference Protocol) REST app: an ASGI callable over a Repository.

    app = ServeApp(Repository.open(Path("models/")), ServeSettings(api_keys=("s3cret",)))
    uvicorn.run(app, host="127.0.0.1", port=8000)      # or onnxferry.serve.server.serve(...)

Routes: /v2/health/live|ready, /v2, /v2/models/{m}[/versions/{v}][/ready|/infer|/config|/stats],
/v2/repository/index and /v2/repository/models/{m}/load|unload (when enabled), /metrics and
/openapi.json: the table in routes.py, which the app dispatches on (each route's endpoint is
one method here) and /openapi.json is rendered from. Every error is ``{"error": "..."}`` with
the status the protocol expects; the app never lets an exception escape to the connection.

Request decoders (which remember the binary layouts a model's clients send) belong to the app,
one per served version, and go when the repository lets the version go.

/v2/health/ready is 200 when every model that should serve (all but unloaded ones) has a
version serving. A compressed body is inflated on the event loop up to ``INFLATE_ON_LOOP``
bytes of work, the rest in a worker thread; a JSON header past ``PARSE_ON_LOOP`` bytes is parsed
in a worker process (``parse_memory`` bytes at most, see parsing.py), and outputs past
``ENCODE_ON_LOOP`` bytes are encoded in a worker thread. An infer request is
validated by the version that runs it, looked up once its body has arrived.

Memory: request bodies held at once (arriving, inflated, being served) are capped server-wide
at ``inflight_limit`` bytes (503 with Retry-After past it), and a response at ``response_limit``
bytes (400: the request is valid, its answer too large to send).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import FerryError, InputError, one_line
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
from .executor import DeadlineExceeded, ExecutionError, ExecutorClosed, QueueFull
from .metadata import model_metadata, triton_config
from .metrics import ServeMetrics
from .openapi import openapi_document
from .parsing import JsonParser, ParserLost
from .protocol import (
    BodyTooLarge,
    Buffer,
    InferRequest,
    Inflater,
    RequestDecoder,
    encode_infer_response,
    parse_header_length,
    response_floor,
)
from .repository import ModelNotFound, ModelNotReady, ModelVersion, Repository
from .routes import ROUTER, ROUTES, Auth

log = logging.getLogger("onnxferry.serve")
access_log = logging.getLogger("onnxferry.serve.access")

Reply = tuple[int, str, str]
"""What an endpoint answered: (status, model, version) for the access log and metrics."""

MIB = 1 << 20
INFLATE_ON_LOOP = 256 * 1024
"""Bytes of a compressed body read plus bytes written that are inflated on the event loop;
past them the rest is inflated in a worker thread (about a millisecond of work)."""
PARSE_ON_LOOP = MIB
"""A JSON request header longer than this is parsed in the parsing process (tens of ms of
work, with the GIL held throughout)."""
ENCODE_ON_LOOP = MIB
"""Outputs of more bytes than this (as arrays) are encoded in a worker thread."""
MAX_TIMEOUT_US = 365 * 24 * 3600 * 10**6
"""The longest ``timeout`` parameter (a year); past it 400, as Python floats cannot hold 10**400."""
LOG_VALUE_LIMIT = 200
"""Characters of a client's value (path, model name) that a log line keeps."""
MAX_VERSION_DIGITS = 18
"""A version segment of more digits names no version (int() refuses past 4300)."""


@dataclass(frozen=True)
class ServeSettings:
    """What the app enforces; the CLI's options map one to one."""

    api_keys: tuple[str, ...] = ()
    """Bearer keys for every route but health (empty: no auth)."""
    repository_keys: tuple[str, ...] = ()
    """Keys for the repository API (empty: the api_keys)."""
    repository_api: bool = False
    body_limit: int = 64 * MIB
    body_timeout_s: float = 30.0
    """The whole request body must arrive within this time."""
    default_timeout_ms: float | None = None
    """Deadline for a request that sets none (the model's ferry.toml timeout_ms wins)."""
    server_name: str = "onnxferry"
    server_version: str = ""
    response_limit: int | None = None
    """Bytes a response body may have (None: 64 MiB or body_limit, the larger); past it the
    request is answered 400."""
    inflight_limit: int | None = None
    """Bytes of request bodies the server holds at once (None: 4 x body_limit, at least
    256 MiB); a request that
    would pass it is answered 503 with Retry-After. At least body_limit."""

    parse_memory: int | None = None
    """Bytes the worker process that parses large JSON bodies may take for one body (None:
    16 x body_limit, at least 256 MiB); a body that needs more is answered 413."""

    @property
    def parse_memory_bytes(self) -> int:
        """``parse_memory`` with its default applied."""
        if self.parse_memory is None:
            return max(16 * self.body_limit, 256 * MIB)
        return self.parse_memory

    @property
    def response_bytes(self) -> int:
        """``response_limit`` with its default applied."""
        if self.response_limit is None:
            return max(self.body_limit, 64 * MIB)
        return self.response_limit

    @property
    def inflight_bytes(self) -> int:
        """``inflight_limit`` with its default applied."""
        if self.inflight_limit is None:
            return max(4 * self.body_limit, 256 * MIB)
        return self.inflight_limit


@dataclass(frozen=True)
class Call:
    """One request as an endpoint sees it: the ASGI triple and the route's path parameters."""

    scope: Scope
    receive: Receive
    send: Send
    params: Mapping[str, str]

    @property
    def model(self) -> str:
        return self.params.get("model", "")

    @property
    def version(self) -> str | None:
        """The version the path names; None for the highest ready one."""
        return self.params.get("version")


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
        self._keys = tuple(k.encode() for k in self.settings.api_keys)
        self._repo_keys = tuple(k.encode() for k in self.settings.repository_keys) or self._keys
        document = openapi_document(
            self.settings.server_version,
            api_keys=bool(self._keys),
            repository_keys=bool(self._repo_keys),
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
        self._decoders: weakref.WeakKeyDictionary[ModelVersion, RequestDecoder] = (
            weakref.WeakKeyDictionary()
        )
        self._endpoints: dict[str, Callable[[Call], Awaitable[Reply]]] = {
            "live": self._live,
            "ready": self._ready,
            "server_metadata": self._server_metadata,
            "model_metadata": self._model_metadata,
            "model_ready": self._model_ready,
            "model_config": self._model_config,
            "model_stats": self._model_stats,
            "infer": self._infer,
            "repository_index": self._repository_index,
            "repository_load": self._repository_load,
            "repository_unload": self._repository_unload,
            "metrics": self._metrics,
            "openapi": self._openapi_json,
        }
        missing = {route.endpoint for route in ROUTES} - set(self._endpoints)
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
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- requests ------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        path: str = scope["path"]
        method: str = scope["method"]
        status, model, version = 500, "", ""
        try:
            found = ROUTER.match(path)
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
            log.exception("internal error on %s %s", method, _cut(path))
            status = await respond_error(send, 500, "internal server error; see the server log")
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(
                json.dumps(
                    {
                        "method": method,
                        "path": _cut(path),
                        "status": status,
                        "model": _cut(model) or None,
                        "version": _cut(version) or None,
                        "ms": round((time.perf_counter() - start) * 1e3, 3),
                        "client": (scope.get("client") or ("", 0))[0],
                    }
                )
            )

    # --- endpoints: what answers each route of routes.ROUTES ------------------------------

    async def _live(self, call: Call) -> Reply:
        return await respond(call.send, 200, b"", "text/plain"), "", ""

    async def _ready(self, call: Call) -> Reply:
        why = self._not_ready()
        if why is not None:
            raise HttpError(400, f"not ready: {why}", "unavailable")
        return await respond(call.send, 200, b"", "text/plain"), "", ""

    async def _server_metadata(self, call: Call) -> Reply:
        extensions = ["binary_tensor_data", "statistics", "model_configuration"]
        if self.settings.repository_api:
            extensions.append("model_repository")
        name, version = self.settings.server_name, self.settings.server_version
        body = {"name": name, "version": version, "extensions": extensions}
        return await respond_json(call.send, 200, body), "", ""

    async def _model_metadata(self, call: Call) -> Reply:
        served = self._get(call.model, call.version)
        versions = self.repository.versions(call.model)
        meta = model_metadata(call.model, versions, served.executor.signature)
        return await respond_json(call.send, 200, meta), call.model, served.version

    async def _model_ready(self, call: Call) -> Reply:
        self._get(call.model, call.version)
        return await respond(call.send, 200, b"", "text/plain"), call.model, call.version or ""

    async def _model_config(self, call: Call) -> Reply:
        served = self._get(call.model, call.version)
        executor = served.executor
        config = triton_config(
            call.model,
            executor.signature,
            served.config,
            executor.batching,
            parallelism=(executor.instances, executor.threads),
        )
        return await respond_json(call.send, 200, config), call.model, served.version

    async def _model_stats(self, call: Call) -> Reply:
        name, version = call.model, call.version
        try:
            versions = [version] if version else self.repository.versions(name)
        except ModelNotFound as e:
            raise HttpError(404, _line(e), "not_found") from None
        stats = []
        for v in versions:
            served = self._get(name, v)
            stats.append({**served.executor.statistics(), "name": name, "version": served.version})
        return await respond_json(call.send, 200, {"model_stats": stats}), name, version or ""

    async def _repository_index(self, call: Call) -> Reply:
        return await respond_json(call.send, 200, self.repository.index()), "", ""

    async def _repository_load(self, call: Call) -> Reply:
        return await self._repository_change(call, self.repository.load)

    async def _repository_unload(self, call: Call) -> Reply:
        return await self._repository_change(call, self.repository.unload)

    async def _repository_change(
        self, call: Call, change: Callable[[str], Awaitable[None]]
    ) -> Reply:
        try:
            await change(call.model)
        except ModelNotFound as e:
            raise HttpError(404, _line(e), "not_found") from None
        except FerryError as e:
            raise HttpError(400, _line(e), "bad_request") from None
        return await respond(call.send, 200, b"", "application/json"), "", ""

    async def _metrics(self, call: Call) -> Reply:
        body, content_type = self.metrics.render()
        return await respond(call.send, 200, body, content_type), "", ""

    async def _openapi_json(self, call: Call) -> Reply:
        return await respond(call.send, 200, self._openapi, "application/json"), "", ""

    async def _infer(self, call: Call) -> Reply:
        start = time.monotonic()
        name, version, receive, send = call.model, call.version, call.receive, call.send
        served = self._get(name, version, not_ready=503)  # before reading a body for nothing
        label = served.version
        headers = dict(call.scope["headers"])
        hold = Hold(self.inflight)
        try:
            header_length = parse_header_length(headers.get(b"inference-header-content-length"))
            body = await read_body(
                receive,
                headers,
                header_length,
                hold,
                limit=self.settings.body_limit,
                timeout_s=self.settings.body_timeout_s,
            )
            encoding = headers.get(b"content-encoding")
            if encoding and encoding != b"identity":
                body = await self._inflate(body, encoding.decode("latin-1"))
                hold.take(len(body))
            served, request = await self._decode(name, version, body, header_length)
            label = served.version
            deadline = self._deadline(request.parameters, served.config.timeout_ms, start)
            names = [o.name for o in request.outputs] if request.outputs is not None else None
            result = await served.executor.infer(
                request.inputs, output_names=names, deadline=deadline
            )
            del body  # the request's arrays may still view it: the hold stays to the end
            payload, response_headers = await self._encode(name, label, request, result.outputs)
            content_type = response_headers.pop("content-type")
            extra = tuple((k.encode(), v.encode()) for k, v in response_headers.items())
            await respond(send, 200, payload, content_type, extra)
        except HttpError as e:
            e.reason = e.reason or "bad_request"
            e.model, e.version = name, label
            raise
        except Exception as e:
            error = _http_error(e)
            error.model, error.version = name, label
            raise error from None
        finally:
            hold.release()
        self.metrics.succeeded(
            name,
            label,
            request_s=time.monotonic() - start,
            queue_s=result.queue_ns / 1e9,
            compute_s=result.compute_ns / 1e9,
            batch=result.batch_size,
        )
        return 200, name, label

    # --- pieces --------------------------------------------------------------------------

    async def _decode(
        self, name: str, version: str | None, body: Buffer, header_length: int | None
    ) -> tuple[ModelVersion, InferRequest]:
        """The version that runs the request, and the request it validated. A JSON header
        past PARSE_ON_LOOP bytes is parsed by the parsing process (never through the decoder's
        cache, which takes headers of at most a few KB); the version may be swapped meanwhile,
        so it is looked up again after, and the request decoded again by a new one."""
        json_size = len(memoryview(body).cast("B")) if header_length is None else header_length
        for _ in range(3):
            # A new version may have been swapped in while the body arrived. From the lookup
            # to the executor's admission nothing else awaits, so the version that validates
            # the request is the one that runs it.
            served = self._get(name, version, not_ready=503)
            decoder = self._decoder(served)
            if json_size <= PARSE_ON_LOOP:
                return served, decoder.decode(body, header_length)
            request = await asyncio.to_thread(
                self.parser.decode,
                body,
                header_length,
                decoder.signature,
                allow_nonfinite=decoder.allow_nonfinite,
            )
            if self._get(name, version, not_ready=503) is served:
                return served, request
        raise HttpError(503, f"model {name!r} is being reloaded; retry", "unavailable")

    async def _encode(
        self, name: str, label: str, request: InferRequest, outputs: Mapping[str, np.ndarray]
    ) -> tuple[bytes, dict[str, str]]:
        """The response body and headers: in a worker thread past ENCODE_ON_LOOP bytes of
        outputs, refused past ``response_limit``.

        Past the limit the answer is 400, not 413 (that is about the request body) nor 500
        (nothing failed): the request asked for more than the server sends in one response,
        and the client fixes it by asking for binary outputs or a smaller batch."""
        limit = self.settings.response_bytes
        floor = response_floor(outputs, request.outputs, request.binary_output)
        if floor > limit:
            raise _response_too_large(f"at least {floor}", limit)
        encode = functools.partial(
            encode_infer_response,
            model_name=name,
            model_version=label,
            request_id=request.id,
            outputs=outputs,
            requested=request.outputs,
            binary_default=request.binary_output,
        )
        if sum(array.nbytes for array in outputs.values()) > ENCODE_ON_LOOP:
            payload, headers = await asyncio.to_thread(encode)
        else:
            payload, headers = encode()
        if len(payload) > limit:
            raise _response_too_large(str(len(payload)), limit)
        return payload, headers

    def _decoder(self, served: ModelVersion) -> RequestDecoder:
        """The request decoder of a served version (it remembers the binary layouts of the
        requests it has seen); held as long as the repository holds the version."""
        decoder = self._decoders.get(served)
        if decoder is None:
            signature, allow_nonfinite = served.executor.signature, served.config.allow_nonfinite
            decoder = RequestDecoder(signature, allow_nonfinite=allow_nonfinite)
            self._decoders[served] = decoder
        return decoder

    def _get(self, name: str, version: str | None, not_ready: int = 400) -> ModelVersion:
        """The served version; 404 when unknown; ``not_ready`` (400 for the metadata and ready
        routes, as the protocol's "4xx means false"; 503 for infer) when it cannot serve."""
        if version is not None and len(version) > MAX_VERSION_DIGITS:
            text = f"model {_cut(name)!r} has no version {_cut(version, 40)!r}"
            raise HttpError(404, text, "not_found")
        try:
            return self.repository.get(name, version)
        except ModelNotFound as e:
            raise HttpError(404, _line(e), "not_found") from None
        except ModelNotReady as e:
            raise HttpError(not_ready, _line(e), "unavailable") from None

    async def _inflate(self, body: Buffer, encoding: str) -> Buffer:
        """The body inflated: up to INFLATE_ON_LOOP bytes of work here, the rest in a worker
        thread so that the event loop keeps answering (health checks among others)."""
        job = Inflater(body, encoding, self.settings.body_limit)
        if not job.run(budget=INFLATE_ON_LOOP):
            await asyncio.to_thread(job.run)
        return job.result()

    def _not_ready(self) -> str | None:
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

    def _authorize(self, scope: Scope, auth: Auth) -> None:
        """401 without a key ``auth`` takes (when the server has such keys); 403 for the
        repository API when it is off."""
        if auth == "open":
            return
        keys = self._keys if auth == "api" else self._repo_keys
        if keys:
            given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
            scheme, _, token = given.partition(b" ")
            if scheme.lower() != b"bearer" or not any(hmac.compare_digest(token, k) for k in keys):
                text = "missing or wrong API key; send Authorization: Bearer KEY"
                raise HttpError(401, text, "auth")
        if auth == "repository" and not self.settings.repository_api:
            text = "the repository API is off; start the server with --repository-api"
            raise HttpError(403, text, "off")

    def _deadline(
        self, parameters: Mapping[str, Any], model_timeout_ms: float | None, start: float
    ) -> float | None:
        """A monotonic deadline, counted from ``start`` (when the request began), from the
        request's ``timeout`` (microseconds, as Triton), else the model's timeout_ms, else the
        server's default."""
        timeout_us = parameters.get("timeout")
        if timeout_us is not None:
            if isinstance(timeout_us, bool) or not isinstance(timeout_us, (int, float)):
                raise HttpError(400, "parameter timeout must be a number of microseconds", "")
            if timeout_us <= 0:
                raise HttpError(400, "parameter timeout must be positive (microseconds)", "")
            if timeout_us > MAX_TIMEOUT_US:
                text = f"parameter timeout must be at most {MAX_TIMEOUT_US} microseconds (a year)"
                raise HttpError(400, text, "")
            seconds = timeout_us / 1e6
        elif model_timeout_ms is not None:
            seconds = model_timeout_ms / 1e3
        elif self.settings.default_timeout_ms is not None:
            seconds = self.settings.default_timeout_ms / 1e3
        else:
            return None
        return start + seconds


def _http_error(error: Exception) -> HttpError:
    """The status and failure reason for what went wrong during an inference."""
    if isinstance(error, BodyTooLarge):
        return HttpError(413, _line(error), "too_large")
    if isinstance(error, (ValueError, InputError)):
        return HttpError(400, _line(error), "bad_request")
    if isinstance(error, (ModelNotReady, ExecutorClosed, ParserLost)):
        return HttpError(503, _line(error), "unavailable")
    if isinstance(error, QueueFull):
        return HttpError(503, _line(error), "queue_full")
    if isinstance(error, DeadlineExceeded):
        return HttpError(504, _line(error), "deadline")
    if isinstance(error, ExecutionError):
        return HttpError(500, _line(error), "internal")
    raise error


def _line(error: BaseException) -> str:
    return one_line(error, limit=None)


def _cut(value: str, limit: int = LOG_VALUE_LIMIT) -> str:
    """``value`` cut to ``limit`` characters, for a log line or a message."""
    return value if len(value) <= limit else value[:limit] + f"...({len(value)} chars)"


def _response_too_large(size: str, limit: int) -> HttpError:
    text = (
        f"the response would be {size} bytes, past the limit of {limit} bytes; ask for binary "
        "outputs (parameters.binary_data_output) or send a smaller batch, or raise "
        "--max-response"
    )
    return HttpError(400, text, "response_too_large")
