"""SageMaker's hosting contract on the V2 server: ``POST /invocations`` turned into an infer call.

    invocations = Invocations(repo, ServeSettings(sagemaker=True), inference, ByteBudget(1 << 28))
    await repo.start()
    status, model, version = await invocations(Call(scope, receive, send, {}))
    await repo.stop()

``ferry serve --sagemaker`` adds ``GET /ping`` (the app's readiness: 200 or 503) and
``POST /invocations`` (this module). The model is the repository's only one, else the one the
``X-Amzn-SageMaker-Target-Model`` header or the ``model`` query names (400 without). The body
goes by its Content-Type:

- ``application/json``: a V2 infer body (``"inputs"``: objects with name, datatype, shape,
  data), answered with the V2 response; or plain JSON (at most ``PLAIN_JSON_LIMIT`` bytes): a
  nested list, ``{"instances": ...}`` or ``{"inputs": ...}`` for a one-input model, or an
  object of nested lists by input name, answered ``{"predictions": <first output>}`` (and
  ``"outputs"``, every output by name, for a model with several).
- ``application/x-npy``: one .npy array (no pickles; its header read here, so a forged shape
  allocates nothing) for a one-input model, answered with the first output as .npy.

``Accept`` picks the answer's form (``application/json`` or ``application/x-npy``; absent or
``*/*``: the form of the request). The translated request runs through ``infer.Inference``
as a V2 request (binary tensor data for arrays), so it is validated, limited, batched and
counted as any infer call; its errors keep their statuses (a wrong shape: 400).
"""

from __future__ import annotations

import asyncio
import io
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import numpy as np

from ..errors import FeedError
from ..signature import DType, Signature, TensorSpec, dtype_from_numpy, dtype_from_v2
from .asgi import (
    ByteBudget,
    Hold,
    HttpError,
    Receive,
    Send,
    read_body,
    request_headers,
    respond,
)
from .catalog import Catalog
from .endpoint import Call, Reply, error_text, lookup
from .infer import ENCODE_ON_LOOP, Inference
from .protocol import BINARY_CONTENT_TYPE, HEADER_LENGTH_HEADER, JSON_CONTENT_TYPE, Buffer
from .settings import ServeSettings
from .tensors import ProtocolError, binary_payload, from_binary

NPY_CONTENT_TYPE = "application/x-npy"
TARGET_MODEL_HEADER = b"x-amzn-sagemaker-target-model"
PLAIN_JSON_LIMIT = 1 << 20
"""Bytes of a plain JSON body (not V2), parsed on the event loop; past it 413: send .npy or
a V2 body (parsed in the parsing process)."""
_NPY_HEADER_LIMIT = 10_000  # numpy's own default


@dataclass(eq=False)
class Invocations:
    """The ``/invocations`` endpoint: ``await invocations(call)``; see the module docstring."""

    repository: Catalog
    settings: ServeSettings
    inference: Inference
    inflight: ByteBudget

    async def __call__(self, call: Call) -> Reply:
        headers = request_headers(call.scope)
        name = self._model(call.scope.get("query_string", b""), headers)
        served = lookup(self.repository, name, None, not_ready=503)
        signature = served.executor.signature
        kind = _media_type(headers.get(b"content-type")) or JSON_CONTENT_TYPE
        if kind not in (JSON_CONTENT_TYPE, NPY_CONTENT_TYPE):
            forms = f"{JSON_CONTENT_TYPE} or {NPY_CONTENT_TYPE}"
            text = f"Content-Type {kind!r} is not served here; send {forms}"
            raise HttpError(415, text, "bad_request")
        answer = _answer_type(headers.get(b"accept"), kind)
        encoding = headers.get(b"content-encoding")
        if encoding and encoding != b"identity":
            raise HttpError(
                415, "/invocations takes no Content-Encoding; send the body as it is", "bad_request"
            )
        hold = Hold(self.inflight)
        try:
            body = await read_body(
                call.receive,
                headers,
                None,
                hold,
                limit=self.settings.body_limit,
                timeout_s=self.settings.body_timeout_s,
            )
            try:
                request = await _off_loop(len(body), _translate, body, kind, answer, signature)
            except (FeedError, ValueError) as e:
                raise HttpError(400, error_text(e), "bad_request") from None
            del body
        finally:
            hold.release()  # the translated request is held by the infer call from here on
        captured = _Captured()
        inner = Call(
            {**call.scope, "headers": request.headers()},
            _once(request.body, call.receive),
            captured.send,
            {"model": name},
        )
        status, model, version = await self.inference(inner)
        payload, content_type, extra = await _off_loop(
            len(captured.body), _answer, request, captured, answer
        )
        if len(payload) > self.settings.response_bytes:
            text = (
                f"the response would be {len(payload)} bytes, past the limit of "
                f"{self.settings.response_bytes} bytes; send a smaller batch or raise "
                "--max-response"
            )
            raise HttpError(400, text, "response_too_large")
        await respond(call.send, status, payload, content_type, extra)
        return status, model, version

    def _model(self, query: bytes, headers: Mapping[bytes, bytes]) -> str:
        """The model the request names, or the repository's only one (400 when it has several)."""
        named = headers.get(TARGET_MODEL_HEADER)
        if named:
            return named.decode("utf-8", "replace")
        given = parse_qs(query.decode("latin-1")).get("model")
        if given:
            return given[0]
        names = self.repository.names()
        if len(names) == 1:
            return names[0]
        shown = ", ".join(names[:10]) or "none"
        text = (
            f"the repository serves {len(names)} models ({shown}); name one with the "
            "X-Amzn-SageMaker-Target-Model header or ?model=NAME"
        )
        raise HttpError(400, text, "bad_request")


@dataclass
class _Request:
    """The V2 request a SageMaker body became, and how its answer goes back."""

    body: bytes
    header_length: int | None
    v2: bool
    """The client sent a V2 body: its JSON answer is the V2 response, unchanged."""

    def headers(self) -> list[tuple[bytes, bytes]]:
        kind = JSON_CONTENT_TYPE if self.header_length is None else BINARY_CONTENT_TYPE
        out = [(b"content-type", kind.encode()), (b"content-length", b"%d" % len(self.body))]
        if self.header_length is not None:
            out.append((HEADER_LENGTH_HEADER.encode(), b"%d" % self.header_length))
        return out


class _Captured:
    """The infer call's response, kept instead of sent."""

    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.body = b""

    async def send(self, message: Mapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.headers = dict(message.get("headers", []))
        else:
            self.body += message.get("body", b"")


def _once(body: bytes, receive: Receive) -> Receive:
    """A receive that gives ``body`` whole, then what the connection says (a disconnect)."""
    sent = False

    async def once() -> Mapping[str, Any]:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return once


async def _off_loop(size: int, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, in a worker thread past ENCODE_ON_LOOP bytes of work."""
    if size > ENCODE_ON_LOOP:
        return await asyncio.to_thread(fn, *args)
    return fn(*args)


def _media_type(value: bytes | None) -> str:
    return (value or b"").decode("latin-1").partition(";")[0].strip().lower()


def _answer_type(accept: bytes | None, kind: str) -> str:
    """The answer's media type: the first one ``accept`` names that is served, else ``kind``
    (absent or ``*/*``); 406 when it names only others."""
    ranges = [
        _media_type(part.encode("latin-1")) for part in (accept or b"").decode("latin-1").split(",")
    ]
    ranges = [r for r in ranges if r]
    for r in ranges:
        if r in (JSON_CONTENT_TYPE, NPY_CONTENT_TYPE):
            return r
    if not ranges or any(r in ("*/*", "application/*") for r in ranges):
        return kind
    text = f"Accept names neither {JSON_CONTENT_TYPE} nor {NPY_CONTENT_TYPE}"
    raise HttpError(406, text, "bad_request")


# --- requests: SageMaker bodies to V2 ------------------------------------------------------


def _translate(body: Buffer, kind: str, answer: str, signature: Signature) -> _Request:
    if kind == NPY_CONTENT_TYPE:
        spec = _only_input(signature)
        array = read_npy(body)
        datatype = _v2(dtype_from_numpy(array.dtype), f"the .npy array's dtype {array.dtype}")
        return _binary_request(signature, [(spec.name, datatype, array)], answer)
    raw = bytes(body)
    first = raw.lstrip()[:1]
    if first == b"{" and len(raw) > PLAIN_JSON_LIMIT:
        return _Request(raw, None, v2=True)  # only a V2 body may be this large
    if len(raw) > PLAIN_JSON_LIMIT:
        raise ProtocolError(
            f"a plain JSON body may have at most {PLAIN_JSON_LIMIT} bytes, this has {len(raw)}",
            hint=f"send {NPY_CONTENT_TYPE} or a V2 infer body",
        )
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise ProtocolError(f"the body is not valid JSON ({e})") from None
    if isinstance(doc, dict) and _is_v2(doc.get("inputs")):
        return _Request(raw, None, v2=True)
    values = _plain_inputs(doc, signature)
    inputs = [
        {"name": name, "datatype": _datatype(signature.input(name)), **_shaped(value)}
        for name, value in values.items()
    ]
    v2: dict[str, Any] = {"inputs": inputs}
    if answer == NPY_CONTENT_TYPE:
        v2["outputs"] = [_first_output(signature)]
    return _Request(json.dumps(v2).encode(), None, v2=False)


def _is_v2(inputs: Any) -> bool:
    return isinstance(inputs, list) and bool(inputs) and all(isinstance(i, dict) for i in inputs)


def _plain_inputs(doc: Any, signature: Signature) -> dict[str, Any]:
    """{input name: nested list} from plain JSON: a list, {"instances": ...}, {"inputs": ...}
    (each a list for the only input, or an object by input name), or an object by input name."""
    if isinstance(doc, dict):
        for key in ("instances", "inputs"):
            if key in doc and len(doc) == 1:
                doc = doc[key]
                break
    if isinstance(doc, dict):
        names = set(signature.input_names)
        unknown = sorted(set(doc) - names)
        if unknown or not doc:
            raise ProtocolError(
                "the JSON object names no inputs of the model "
                f"({', '.join(unknown[:5]) or 'empty'})",
                hint=f'send a nested list, {{"instances": ...}}, an object by input name '
                f"({signature.input_names}) or a V2 infer body",
            )
        return dict(doc)
    return {_only_input(signature).name: doc}


def _only_input(signature: Signature) -> TensorSpec:
    if len(signature.inputs) != 1:
        raise ProtocolError(
            f"the model has {len(signature.inputs)} inputs ({signature.input_names}); a bare "
            "array feeds a one-input model",
            hint="send a JSON object by input name, or a V2 infer body",
        )
    return signature.inputs[0]


def _shaped(value: Any) -> dict[str, Any]:
    """A nested list's shape (its first elements') and data; a scalar is shape []."""
    if not isinstance(value, list):
        return {"shape": [], "data": [value]}
    shape, item = [], value
    while isinstance(item, list):
        shape.append(len(item))
        if not item:
            break
        item = item[0]
    return {"shape": shape, "data": value}


def _datatype(spec: TensorSpec) -> str:
    return _v2(spec.dtype, f"input {spec.name!r} has ONNX type {spec.dtype.onnx_name}, which")


def _v2(dtype: DType, what: str) -> str:
    if dtype.v2 is None:
        raise ProtocolError(f"{what} has no V2 datatype")
    return dtype.v2


def _first_output(signature: Signature) -> dict[str, Any]:
    """The first output, asked as binary data (JSON for text)."""
    spec = signature.outputs[0]
    return {"name": spec.name, "parameters": {"binary_data": spec.dtype.kind != "string"}}


def _binary_request(
    signature: Signature, arrays: list[tuple[str, str, np.ndarray]], answer: str
) -> _Request:
    described, payloads = [], []
    for name, datatype, array in arrays:
        payload = binary_payload(name, array, datatype)
        payloads.append(payload)
        described.append(
            {
                "name": name,
                "datatype": datatype,
                "shape": list(array.shape),
                "parameters": {"binary_data_size": payload.nbytes},
            }
        )
    v2: dict[str, Any] = {"inputs": described}
    if answer == NPY_CONTENT_TYPE:
        v2["outputs"] = [_first_output(signature)]
    header = json.dumps(v2).encode()
    return _Request(b"".join([header, *payloads]), len(header), v2=False)


def read_npy(data: Buffer) -> np.ndarray:
    """The array of a .npy file's bytes (format 1.0 or 2.0, no objects), a view of them; its
    header is checked against the data's size before anything is allocated."""
    view = memoryview(data).cast("B")
    stream = io.BytesIO(view[: _NPY_HEADER_LIMIT + 12])
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"format version {version} is not read here (1.0 and 2.0 are)")
    except ValueError as e:
        raise ProtocolError(f"the body is not a .npy array ({e})") from None
    if dtype.hasobject:
        raise ProtocolError("the .npy array holds Python objects, which are not read here")
    count = math.prod(shape)
    need = count * dtype.itemsize
    start = stream.tell()
    if need != view.nbytes - start:
        raise ProtocolError(
            f"the .npy header says shape {list(shape)} of {dtype} ({need} bytes) but "
            f"{view.nbytes - start} bytes follow it"
        )
    array = np.frombuffer(view[start:], dtype=dtype, count=count)
    return array.reshape(shape, order="F" if fortran else "C")


# --- answers: V2 responses to SageMaker's --------------------------------------------------


def _answer(
    request: _Request, captured: _Captured, answer: str
) -> tuple[bytes, str, tuple[tuple[bytes, bytes], ...]]:
    """The body, Content-Type and extra headers of the answer to the infer call's response."""
    length = captured.headers.get(HEADER_LENGTH_HEADER.encode())
    if answer == JSON_CONTENT_TYPE and request.v2:
        kind = captured.headers.get(b"content-type", JSON_CONTENT_TYPE.encode()).decode()
        return captured.body, kind, ((HEADER_LENGTH_HEADER.encode(), length),) if length else ()
    split = int(length) if length else len(captured.body)
    header = json.loads(captured.body[:split])
    if answer == NPY_CONTENT_TYPE:
        outputs = _outputs(header["outputs"], memoryview(captured.body)[split:])
        array = next(iter(outputs.values()))
        if array.dtype == object:
            array = array.astype(str)
        out = io.BytesIO()
        np.save(out, array, allow_pickle=False)
        return out.getvalue(), NPY_CONTENT_TYPE, ()
    # Asked as JSON data: the values as the response wrote them, nested by their shape.
    nested = {
        entry["name"]: np.array(entry["data"], dtype=object).reshape(entry["shape"]).tolist()
        for entry in header["outputs"]
    }
    doc: dict[str, Any] = {"predictions": next(iter(nested.values()))}
    if len(nested) > 1:
        doc["outputs"] = nested
    return json.dumps(doc).encode(), JSON_CONTENT_TYPE, ()


def _outputs(described: list[dict[str, Any]], data: memoryview) -> dict[str, np.ndarray]:
    """The V2 response's outputs as arrays (JSON data or binary data after the header)."""
    outputs: dict[str, np.ndarray] = {}
    offset = 0
    for entry in described:
        spec = TensorSpec(entry["name"], dtype_from_v2(entry["datatype"]), None)
        shape = list(entry["shape"])
        count = math.prod(shape)
        size = entry.get("parameters", {}).get("binary_data_size")
        if size is not None:
            array = from_binary(spec, shape, count, data[offset : offset + size])
            offset += size
        elif spec.dtype.kind == "string":
            array = np.array(entry["data"], dtype=object).reshape(shape)
        else:
            array = np.array(entry["data"], dtype=spec.dtype.numpy).reshape(shape)
        outputs[spec.name] = array
    return outputs


async def ping(ready: str | None, send: Send) -> Reply:
    """``GET /ping``: 200 when ``ready`` (the app's reason it is not) is None, else 503."""
    if ready is not None:
        raise HttpError(503, f"not ready: {ready}", "unavailable")
    return await respond(send, 200, b"", "text/plain"), "", ""
