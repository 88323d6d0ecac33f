"""The infer endpoint: body, decode, run, encode, with the server's limits on each step.

    inference = Inference(repo, ServeSettings(), ServeMetrics(), ByteBudget(256 << 20), parser)
    await repo.start()
    status, model, version = await inference(Call(scope, receive, send, {"model": "resnet"}))
    await repo.stop()

The version is looked up before the body is read (503 when it cannot serve) and again once it
has arrived: it validates the request (its ``RequestDecoder`` remembers the binary layouts its
clients send, held as long as the repository holds the version) and runs it. A compressed body
is inflated on the event loop up to ``INFLATE_ON_LOOP`` bytes of work, the rest in a worker
thread; a JSON header past ``PARSE_ON_LOOP`` bytes is parsed in the parsing process, and outputs
past ``ENCODE_ON_LOOP`` bytes are encoded in a worker thread. Request bodies held at once count
against the shared ``inflight`` budget, a response against ``response_limit`` (400 past it).
Failures become HttpErrors with the status and the reason the metrics count.

``Inference.answer`` is that path without the wire: the lookup, the deadline (the request's
``timeout``, the model's, the server's, or the transport's: the earliest), the work (infer's:
the executor and the repository's watch on the outputs; explain's in explaining.py), the
metrics and the byte budget. An ``Exchange`` brings the wire: REST's body here
(``RestExchange``), gRPC's messages in grpc_server.py.
"""

from __future__ import annotations

import asyncio
import functools
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np

from ..errors import InputError
from .asgi import ByteBudget, Hold, HttpError, read_body, request_headers, respond
from .catalog import Catalog, ModelNotReady
from .endpoint import Call, Reply, error_text, lookup
from .executor import DeadlineExceeded, ExecutionError, ExecutorClosed, QueueFull
from .inflate import BodyTooLarge, Inflater
from .metrics import ServeMetrics
from .parsing import JsonParser, ParserLost
from .protocol import Buffer, InferRequest, RequestDecoder, parse_header_length
from .responses import encode_infer_response, response_floor
from .settings import MIB, ServeSettings
from .shm import SharedMemory
from .versions import ModelVersion

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

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


@dataclass(eq=False)
class Inference:
    """The infer endpoint over a repository: ``await inference(call)``; see the module
    docstring. ``inflight`` and ``parser`` are the app's, shared with nothing else."""

    repository: Catalog
    settings: ServeSettings
    metrics: ServeMetrics
    inflight: ByteBudget
    parser: JsonParser
    regions: SharedMemory | None = None
    """System shared memory (shm.py), where inputs and outputs naming a region lie."""
    _decoders: weakref.WeakKeyDictionary[ModelVersion, RequestDecoder] = field(
        default_factory=weakref.WeakKeyDictionary, init=False, repr=False
    )

    async def __call__(self, call: Call) -> Reply:
        """Answer one infer request (the app's endpoint for the "infer" route)."""
        exchange = RestExchange(self, call)
        _, label = await self.answer(call.model, call.version, exchange, time.monotonic())
        return 200, call.model, label

    async def answer(
        self,
        name: str,
        version: str | None,
        exchange: Exchange[T],
        start: float,
        work: Work | None = None,
    ) -> tuple[T, str]:
        """Run one request on the path every protocol shares: look the version up (before any
        body is read), ``exchange.receive`` the validated request, take the earliest deadline,
        do the ``work`` (default: infer's, ``run``), ``exchange.reply``, count it. Returns what
        ``reply`` returned and the version that answered; failures are HttpErrors with their
        status, the reason the metrics count, the model and version. ``start`` is when the
        request began (``time.monotonic()``)."""
        served = lookup(self.repository, name, version, not_ready=503)
        label = served.version
        hold = Hold(self.inflight)
        try:
            served, request = await exchange.receive(served, hold)
            label = served.version
            deadline = self._deadline(request.parameters, served.config.timeout_ms, start)
            wire = exchange.deadline
            if wire is not None and (deadline is None or wire < deadline):
                deadline = wire
            done = await (work or self.run)(served, request, deadline)
            answer = await exchange.reply(name, label, request, done.outputs)
        except HttpError as e:
            e.reason = e.reason or "bad_request"
            e.model, e.version = name, label
            raise
        except Exception as e:
            error = _http_error(e)
            error.model, error.version = name, label
            self.repository.observe(served, None, error.reason)
            raise error from None
        finally:
            hold.release()  # the request's arrays may view the bytes held: released last
        done.count(time.monotonic() - start)
        return answer, label

    async def run(
        self, served: ModelVersion, request: InferRequest, deadline: float | None
    ) -> Done:
        """Infer's work: the executor runs the request, the repository watches its outputs."""
        names = [o.name for o in request.outputs] if request.outputs is not None else None
        result = await served.executor.infer(request.inputs, output_names=names, deadline=deadline)
        self.repository.observe(served, result.outputs)

        def count(seconds: float) -> None:
            self.metrics.succeeded(
                served.name,
                served.version,
                request_s=seconds,
                queue_s=result.queue_ns / 1e9,
                compute_s=result.compute_ns / 1e9,
                batch=result.batch_size,
            )

        return Done(result.outputs, count)

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
            served = lookup(self.repository, name, version, not_ready=503)
            decoder = self._decoder(served)
            if json_size <= PARSE_ON_LOOP:
                return served, decoder.decode(body, header_length, self.regions)
            request = await asyncio.to_thread(
                self.parser.decode,
                body,
                header_length,
                decoder.signature,
                allow_nonfinite=decoder.allow_nonfinite,
            )
            if lookup(self.repository, name, version, not_ready=503) is served:
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
            regions=self.regions,
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

    async def _inflate(self, body: Buffer, encoding: str) -> Buffer:
        """The body inflated: up to INFLATE_ON_LOOP bytes of work here, the rest in a worker
        thread so that the event loop keeps answering (health checks among others)."""
        job = Inflater(body, encoding, self.settings.body_limit)
        if not job.run(budget=INFLATE_ON_LOOP):
            await asyncio.to_thread(job.run)
        return job.result()

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


@dataclass(frozen=True)
class Done:
    """What a request's work produced: the outputs to send, and what to count once they are
    sent (given the request's seconds)."""

    outputs: Mapping[str, np.ndarray]
    count: Callable[[float], None]


Work = Callable[[ModelVersion, InferRequest, "float | None"], Awaitable[Done]]
"""A request's work between receiving and replying: ``Inference.run`` (infer), or explain's."""


class Exchange(Protocol[T_co]):
    """What one wire protocol does around ``Inference.answer``: REST reads and writes an HTTP
    body (``RestExchange``), gRPC converts protobuf messages (grpc_server.py)."""

    @property
    def deadline(self) -> float | None:
        """A monotonic deadline the transport sets (gRPC's), or None; the earliest counts."""
        ...

    async def receive(self, served: ModelVersion, hold: Hold) -> tuple[ModelVersion, InferRequest]:
        """The request, validated by the version that runs it (``served``, or the one a new
        lookup finds when receiving awaited), its bytes held in ``hold``."""
        ...

    async def reply(
        self, name: str, version: str, request: InferRequest, outputs: Mapping[str, np.ndarray]
    ) -> T_co:
        """Answer with the outputs (send them, or build the message that carries them)."""
        ...


@dataclass
class RestExchange:
    """The REST exchange: the body read under the server's limits, inflated and decoded; the
    response encoded (binary or JSON) and sent."""

    inference: Inference
    call: Call
    deadline: float | None = None

    async def receive(self, served: ModelVersion, hold: Hold) -> tuple[ModelVersion, InferRequest]:
        inference, settings = self.inference, self.inference.settings
        headers = request_headers(self.call.scope)
        header_length = parse_header_length(headers.get(b"inference-header-content-length"))
        body = await read_body(
            self.call.receive,
            headers,
            header_length,
            hold,
            limit=settings.body_limit,
            timeout_s=settings.body_timeout_s,
        )
        encoding = headers.get(b"content-encoding")
        if encoding and encoding != b"identity":
            body = await inference._inflate(body, encoding.decode("latin-1"))
            hold.take(len(body))
        return await inference._decode(self.call.model, self.call.version, body, header_length)

    async def reply(
        self, name: str, version: str, request: InferRequest, outputs: Mapping[str, np.ndarray]
    ) -> None:
        payload, headers = await self.inference._encode(name, version, request, outputs)
        content_type = headers.pop("content-type")
        extra = tuple((k.encode(), v.encode()) for k, v in headers.items())
        await respond(self.call.send, 200, payload, content_type, extra)


def _http_error(error: Exception) -> HttpError:
    """The status and failure reason for what went wrong during an inference."""
    if isinstance(error, BodyTooLarge):
        return HttpError(413, error_text(error), "too_large")
    if isinstance(error, (ValueError, InputError)):
        return HttpError(400, error_text(error), "bad_request")
    if isinstance(error, (ModelNotReady, ExecutorClosed, ParserLost)):
        return HttpError(503, error_text(error), "unavailable")
    if isinstance(error, QueueFull):
        return HttpError(503, error_text(error), "queue_full")
    if isinstance(error, DeadlineExceeded):
        return HttpError(504, error_text(error), "deadline")
    if isinstance(error, ExecutionError):
        return HttpError(500, error_text(error), "internal")
    raise error


def _response_too_large(size: str, limit: int) -> HttpError:
    text = (
        f"the response would be {size} bytes, past the limit of {limit} bytes; ask for binary "
        "outputs (parameters.binary_data_output) or send a smaller batch, or raise "
        "--max-response"
    )
    return HttpError(400, text, "response_too_large")
