"""The KServe V2 (Open Inference Protocol) REST app: an ASGI callable over a Repository.

    app = ServeApp(Repository.open(Path("models/")), ServeSettings(api_keys=("s3cret",)))
    uvicorn.run(app, host="127.0.0.1", port=8000)      # or onnxferry.serve.server.serve(...)

Routes: /v2/health/live|ready, /v2, /v2/models/{m}[/versions/{v}][/ready|/infer|/config|/stats],
/v2/repository/index and /v2/repository/models/{m}/load|unload (when enabled), /metrics and
/openapi.json. Every error is ``{"error": "..."}`` with the status the protocol expects; the app
never lets an exception escape to the connection.

/v2/health/ready is 200 when every model that should serve (all but unloaded ones) has a
version serving. A compressed body is inflated on the event loop up to ``INFLATE_ON_LOOP``
bytes of work, the rest in a worker thread. An infer request is validated by the version that
runs it, looked up once its body has arrived.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import FerryError, InputError, one_line
from .config import triton_config
from .executor import DeadlineExceeded, ExecutionError, ExecutorClosed, QueueFull
from .metrics import ServeMetrics
from .openapi import openapi_document
from .protocol import (
    BodyTooLarge,
    Buffer,
    Inflater,
    body_buffer,
    encode_infer_response,
    model_metadata,
    parse_header_length,
)
from .repository import ModelNotFound, ModelNotReady, ModelVersion, Repository

log = logging.getLogger("onnxferry.serve")
access_log = logging.getLogger("onnxferry.serve.access")

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[Mapping[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]

MIB = 1 << 20
INFLATE_ON_LOOP = 256 * 1024
"""Bytes of a compressed body read plus bytes written that are inflated on the event loop;
past them the rest is inflated in a worker thread (about a millisecond of work)."""


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


class HttpError(Exception):
    """A response with a status and one line; ``reason`` labels the failure metric."""

    def __init__(
        self, status: int, message: str, reason: str, headers: tuple[tuple[bytes, bytes], ...] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.headers = headers
        self.model = ""
        self.version = ""


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
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- requests ------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        path: str = scope["path"]
        method: str = scope["method"]
        status, model, version = 500, "", ""
        try:
            parts = [p for p in path.split("/") if p]
            if parts[:1] == ["v2"]:
                status, model, version = await self._v2(parts[1:], method, scope, receive, send)
            elif path == "/metrics":
                _method(method, "GET")
                self._authorize(scope, self._keys)
                body, content_type = self.metrics.render()
                status = await _respond(send, 200, body, content_type)
            elif path == "/openapi.json":
                _method(method, "GET")
                status = await _respond(send, 200, self._openapi, "application/json")
            else:
                raise HttpError(404, f"no route {path}; see /openapi.json", "not_found")
        except HttpError as e:
            model, version = e.model, e.version
            if e.model:
                self.metrics.failed(e.model, e.version or "-", e.reason)
            status = await _error(send, e.status, e.message, e.headers)
        except Exception:  # a bug: log it, answer 500, keep serving
            log.exception("internal error on %s %s", method, path)
            status = await _error(send, 500, "internal server error; see the server log")
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(
                json.dumps(
                    {
                        "method": method,
                        "path": path,
                        "status": status,
                        "model": model or None,
                        "version": version or None,
                        "ms": round((time.perf_counter() - start) * 1e3, 3),
                        "client": (scope.get("client") or ("", 0))[0],
                    }
                )
            )

    async def _v2(
        self, parts: list[str], method: str, scope: Scope, receive: Receive, send: Send
    ) -> tuple[int, str, str]:
        """Route /v2/...; returns (status, model, version) for the log and metrics."""
        if parts[:1] == ["health"] and len(parts) == 2 and parts[1] in ("live", "ready"):
            _method(method, "GET")
            why = None if parts[1] == "live" else self._not_ready()
            if why is None:
                return await _respond(send, 200, b"", "text/plain"), "", ""
            raise HttpError(400, f"not ready: {why}", "unavailable")
        self._authorize(scope, self._keys if parts[:1] != ["repository"] else self._repo_keys)
        if not parts:
            _method(method, "GET")
            return await _json(send, 200, self._server_metadata()), "", ""
        if parts[0] == "repository":
            return await self._repository(parts[1:], method, send), "", ""
        if parts[0] != "models" or len(parts) < 2:
            raise HttpError(404, f"no route /v2/{'/'.join(parts)}; see /openapi.json", "not_found")
        name, rest = parts[1], parts[2:]
        version: str | None = None
        if rest[:1] == ["versions"]:
            if len(rest) < 2:
                raise HttpError(404, "a version is missing after /versions/", "not_found")
            version, rest = rest[1], rest[2:]
        action = rest[0] if len(rest) == 1 else ("" if not rest else None)
        if action == "infer":
            _method(method, "POST")
            return await self._infer(name, version, scope, receive, send)
        _method(method, "GET")
        if action == "":
            served = self._get(name, version)
            meta = model_metadata(name, self.repository.versions(name), served.executor.signature)
            return await _json(send, 200, meta), name, served.version
        if action == "ready":
            self._get(name, version)
            return await _respond(send, 200, b"", "text/plain"), name, version or ""
        if action == "config":
            served = self._get(name, version)
            executor = served.executor
            config = triton_config(
                name,
                executor.signature,
                served.config,
                executor.batching,
                parallelism=(executor.instances, executor.threads),
            )
            return await _json(send, 200, config), name, served.version
        if action == "stats":
            return await _json(send, 200, self._stats(name, version)), name, version or ""
        raise HttpError(404, f"no route /v2/{'/'.join(parts)}; see /openapi.json", "not_found")

    async def _infer(
        self, name: str, version: str | None, scope: Scope, receive: Receive, send: Send
    ) -> tuple[int, str, str]:
        start = time.monotonic()
        served = self._get(name, version, not_ready=503)  # before reading a body for nothing
        label = served.version
        headers = _headers(scope)
        try:
            header_length = parse_header_length(headers.get(b"inference-header-content-length"))
            body = await self._body(headers, header_length, receive)
            encoding = headers.get(b"content-encoding")
            if encoding and encoding != b"identity":
                body = await self._inflate(body, encoding.decode("latin-1"))
            # A new version may have been swapped in while the body arrived. From here to the
            # executor's admission nothing awaits, so the version that validates the request
            # is the one that runs it.
            served = self._get(name, version, not_ready=503)
            label = served.version
            request = served.decoder.decode(body, header_length)
            deadline = self._deadline(request.parameters, served.config.timeout_ms, start)
            names = [o.name for o in request.outputs] if request.outputs is not None else None
            result = await served.executor.infer(
                request.inputs, output_names=names, deadline=deadline
            )
        except HttpError as e:
            e.reason = e.reason or "bad_request"
            e.model, e.version = name, label
            raise
        except Exception as e:
            error = _http_error(e)
            error.model, error.version = name, label
            raise error from None
        payload, response_headers = encode_infer_response(
            model_name=name,
            model_version=label,
            request_id=request.id,
            outputs=result.outputs,
            requested=request.outputs,
            binary_default=request.binary_output,
        )
        content_type = response_headers.pop("content-type")
        extra = tuple((k.encode(), v.encode()) for k, v in response_headers.items())
        await _respond(send, 200, payload, content_type, extra)
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

    def _get(self, name: str, version: str | None, not_ready: int = 400) -> ModelVersion:
        """The served version; 404 when unknown; ``not_ready`` (400 for the metadata and ready
        routes, as the protocol's "4xx means false"; 503 for infer) when it cannot serve."""
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

    def _server_metadata(self) -> dict[str, Any]:
        extensions = ["binary_tensor_data", "statistics", "model_configuration"]
        if self.settings.repository_api:
            extensions.append("model_repository")
        return {
            "name": self.settings.server_name,
            "version": self.settings.server_version,
            "extensions": extensions,
        }

    def _stats(self, name: str, version: str | None) -> dict[str, Any]:
        try:
            versions = [version] if version else self.repository.versions(name)
        except ModelNotFound as e:
            raise HttpError(404, _line(e), "not_found") from None
        stats = []
        for v in versions:
            served = self._get(name, v)
            stats.append({**served.executor.statistics(), "name": name, "version": served.version})
        return {"model_stats": stats}

    async def _repository(self, parts: list[str], method: str, send: Send) -> int:
        if not self.settings.repository_api:
            raise HttpError(
                403, "the repository API is off; start the server with --repository-api", "off"
            )
        _method(method, "POST")
        if parts == ["index"]:
            return await _json(send, 200, self.repository.index())
        if len(parts) == 3 and parts[0] == "models" and parts[2] in ("load", "unload"):
            name = parts[1]
            try:
                if parts[2] == "load":
                    await self.repository.load(name)
                else:
                    await self.repository.unload(name)
            except ModelNotFound as e:
                raise HttpError(404, _line(e), "not_found") from None
            except FerryError as e:
                raise HttpError(400, _line(e), "bad_request") from None
            return await _respond(send, 200, b"", "application/json")
        raise HttpError(404, f"no route /v2/repository/{'/'.join(parts)}", "not_found")

    def _authorize(self, scope: Scope, keys: tuple[bytes, ...]) -> None:
        if not keys:
            return
        given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        scheme, _, token = given.partition(b" ")
        if scheme.lower() == b"bearer" and any(hmac.compare_digest(token, k) for k in keys):
            return
        raise HttpError(401, "missing or wrong API key; send Authorization: Bearer KEY", "auth")

    async def _body(
        self, headers: Mapping[bytes, bytes], header_length: int | None, receive: Receive
    ) -> Buffer:
        """The whole body, refused (413) past the limit by Content-Length or, for chunked
        bodies, by counting streamed bytes; 408 when it does not arrive in time. A body in
        several pieces with a Content-Length lands in an aligned buffer, so its binary tensors
        need no copy; a body that arrives whole is used as it is."""
        limit = self.settings.body_limit
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise HttpError(413, _too_large(limit), "too_large")
        expected = int(declared) if declared is not None else None
        buffer: memoryview | None = None
        chunks: list[bytes] = []
        size = 0
        # One timer for the whole body that cancels this task (asyncio.timeout costs several
        # times more, and this runs on every request).
        task = asyncio.current_task()
        assert task is not None
        fired: list[bool] = []
        timer = task.get_loop().call_later(self.settings.body_timeout_s, _cancel, task, fired)
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise HttpError(
                        400, "the client disconnected before sending the body", "aborted"
                    )
                chunk = message.get("body", b"")
                more = message.get("more_body", False)
                end = size + len(chunk)
                if end > limit or (expected is not None and end > expected):
                    raise HttpError(413, _too_large(limit), "too_large")
                if more and expected is not None and buffer is None and not chunks:
                    buffer = body_buffer(expected, header_length)
                if buffer is not None:
                    buffer[size:end] = chunk
                else:
                    chunks.append(chunk)
                size = end
                if not more:
                    break
        except asyncio.CancelledError:
            if not fired or _uncancel(task):
                raise
            seconds = self.settings.body_timeout_s
            text = f"the request body did not arrive within {seconds:g} s"
            raise HttpError(408, text, "timeout") from None
        finally:
            timer.cancel()
        if buffer is not None:
            return buffer[:size]
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

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
    if isinstance(error, (ModelNotReady, ExecutorClosed)):
        return HttpError(503, _line(error), "unavailable")
    if isinstance(error, QueueFull):
        return HttpError(503, _line(error), "queue_full")
    if isinstance(error, DeadlineExceeded):
        return HttpError(504, _line(error), "deadline")
    if isinstance(error, ExecutionError):
        return HttpError(500, _line(error), "internal")
    raise error


def _cancel(task: asyncio.Task[Any], fired: list[bool]) -> None:
    fired.append(True)
    task.cancel()


def _uncancel(task: asyncio.Task[Any]) -> int:
    """Take back our cancellation (Task.uncancel, 3.11+); the count of others still pending."""
    uncancel = getattr(task, "uncancel", None)
    return int(uncancel()) if uncancel is not None else 0


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return dict(scope["headers"])


def _method(method: str, allowed: str) -> None:
    if method != allowed:
        text = f"method {method} is not allowed here; use {allowed}"
        raise HttpError(405, text, "method", ((b"allow", allowed.encode()),))


def _line(error: BaseException) -> str:
    return one_line(error, limit=None)


def _too_large(limit: int) -> str:
    return (
        f"the request body is larger than the limit of {limit} bytes; send less or raise --max-body"
    )


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> int:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", b"%d" % len(body)),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
    return status


async def _json(send: Send, status: int, data: Any) -> int:
    return await _respond(send, status, json.dumps(data).encode(), "application/json")


async def _error(
    send: Send, status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> int:
    try:
        body = json.dumps({"error": message}).encode()
        return await _respond(send, status, body, "application/json", headers)
    except Exception:  # the response had started, or the client is gone
        return status
