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
"""

from __future__ import annotations

import asyncio
import functools
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError
from .asgi import ByteBudget, Hold, HttpError, read_body, respond
from .catalog import Catalog, ModelNotReady
from .endpoint import Call, Reply, error_text, lookup
from .executor import DeadlineExceeded, ExecutionError, ExecutorClosed, QueueFull
from .inflate import BodyTooLarge, Inflater
from .metrics import ServeMetrics
from .parsing import JsonParser, ParserLost
from .protocol import Buffer, InferRequest, RequestDecoder, parse_header_length
from .responses import encode_infer_response, response_floor
from .settings import MIB, ServeSettings
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


@dataclass(eq=False)
class Inference:
    """The infer endpoint over a repository: ``await inference(call)``; see the module
    docstring. ``inflight`` and ``parser`` are the app's, shared with nothing else."""

    repository: Catalog
    settings: ServeSettings
    metrics: ServeMetrics
    inflight: ByteBudget
    parser: JsonParser
    _decoders: weakref.WeakKeyDictionary[ModelVersion, RequestDecoder] = field(
        default_factory=weakref.WeakKeyDictionary, init=False, repr=False
    )

    async def __call__(self, call: Call) -> Reply:
        """Answer one infer request (the app's endpoint for the "infer" route)."""
        start = time.monotonic()
        name, version, receive, send = call.model, call.version, call.receive, call.send
        # Looked up before reading a body for nothing.
        served = lookup(self.repository, name, version, not_ready=503)
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
            self.repository.observe(served, result.outputs)
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
            self.repository.observe(served, None, error.reason)
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
                return served, decoder.decode(body, header_length)
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
