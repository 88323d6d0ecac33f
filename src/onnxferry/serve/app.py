"""The KServe V2 (Open Inference Protocol) REST app: an ASGI callable over a Repository.

    app = ServeApp(Repository.open(Path("models/")), ServeSettings(api_keys=("s3cret",)))
    uvicorn.run(app, host="127.0.0.1", port=8000)      # or onnxferry.serve.server.serve(...)

Routes: /v2/health/live|ready, /v2, /v2/models/{m}[/versions/{v}][/ready|/infer|/config|/stats],
/v2/repository/index and /v2/repository/models/{m}/load|unload (when enabled), /metrics and
/openapi.json. Every error is ``{"error": "..."}`` with the status the protocol expects; the app
never lets an exception escape to the connection.

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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import FerryError, InputError, one_line
from .config import triton_config
from .executor import DeadlineExceeded, ExecutionError, ExecutorClosed, QueueFull
from .metrics import ServeMetrics
from .openapi import openapi_document
from .parsing import JsonParser, ParserLost
from .protocol import (
    BodyTooLarge,
    Buffer,
    InferRequest,
    Inflater,
    body_buffer,
    encode_infer_response,
    model_metadata,
    parse_header_length,
    response_floor,
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


class ByteBudget:
    """Bytes held server-wide, taken and given back on the event loop thread (no lock).

    budget = ByteBudget(256 << 20)
    if not budget.take(n): refuse
    ...
    budget.give(n)
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> bool:
        """Hold ``size`` more bytes; False (holding nothing) when that would pass the limit."""
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used -= size


class Hold:
    """What one request holds of a ByteBudget; ``release`` (in a finally) gives it all back.

    hold = Hold(budget)
    try: hold.take(len(chunk)) ... finally: hold.release()
    """

    def __init__(self, budget: ByteBudget) -> None:
        self.budget = budget
        self.size = 0

    def take(self, size: int) -> None:
        """Hold ``size`` more bytes, or raise HttpError 503 with Retry-After."""
        if not self.budget.take(size):
            limit = self.budget.limit
            text = (
                f"the server holds too many request bodies: {size} more bytes would pass its "
                f"limit of {limit} bytes in flight; retry later"
            )
            raise HttpError(503, text, "busy", ((b"retry-after", b"1"),))
        self.size += size

    def release(self) -> None:
        self.budget.give(self.size)
        self.size = 0


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
        if self.settings.inflight_bytes < self.settings.body_limit:
            raise InputError(
                f"inflight_limit ({self.settings.inflight_bytes} bytes) is below body_limit "
                f"({self.settings.body_limit} bytes): no request of the largest size could run"
            )
        self.inflight = ByteBudget(self.settings.inflight_bytes)
        self.parser = JsonParser(self.settings.parse_memory_bytes)

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
            log.exception("internal error on %s %s", method, _cut(path))
            status = await _error(send, 500, "internal server error; see the server log")
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
            if len(version) > MAX_VERSION_DIGITS:
                text = f"model {_cut(name)!r} has no version {_cut(version, 40)!r}"
                raise HttpError(404, text, "not_found")
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
        hold = Hold(self.inflight)
        try:
            header_length = parse_header_length(headers.get(b"inference-header-content-length"))
            body = await self._body(headers, header_length, receive, hold)
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
            await _respond(send, 200, payload, content_type, extra)
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
            if json_size <= PARSE_ON_LOOP:
                return served, served.decoder.decode(body, header_length)
            decoder = served.decoder
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
        self,
        headers: Mapping[bytes, bytes],
        header_length: int | None,
        receive: Receive,
        hold: Hold,
    ) -> Buffer:
        """The whole body, refused (413) past the limit by Content-Length or, for chunked
        bodies, by counting streamed bytes; 408 when it does not arrive in time; 503 when
        ``hold`` cannot take its bytes (all of a Content-Length at once, before reading). A body in
        several pieces with a Content-Length lands in an aligned buffer, so its binary tensors
        need no copy; a body that arrives whole is used as it is."""
        limit = self.settings.body_limit
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise HttpError(413, _too_large(limit), "too_large")
        expected = int(declared) if declared is not None else None
        if expected is not None:
            hold.take(expected)
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
                if expected is None:
                    hold.take(len(chunk))
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
