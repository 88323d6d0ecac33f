"""KServe V2 infer requests: JSON and Triton's binary tensor data extension, decoded and checked.

    request = decode_infer_request(body, parse_header_length(value), model.signature)
    outputs = runner.run(request.inputs)                    # {name: array}, e.g. an OrtRunner

Decoding checks every input against the model's Signature and raises ProtocolError (HTTP 400)
naming the tensor. Binary inputs are numpy views of the body, not copies, unless their offset is
misaligned for the dtype; read the body into ``body_buffer`` and the first one never is.
``RequestDecoder`` remembers the binary layouts a model's clients send. Responses are encoded
by ``responses.encode_infer_response``; compressed bodies inflated by ``inflate``.

Datatypes map one to one onto numpy (BF16 is ``ml_dtypes.bfloat16``), except BYTES: a numpy
object array of ``str``, the only string form ONNX Runtime reads correctly (it turns ``bytes``
elements into "b'...'"), so binary BYTES elements must be UTF-8. Unlike Triton, FP16 and BF16
are accepted and returned as JSON numbers too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..signature import Signature, TensorSpec
from .shm import RegionRef, SharedMemory, region_ref
from .tensors import ProtocolError as ProtocolError  # re-exported: the codec's error
from .tensors import check_finite, from_binary, from_json

JSON_CONTENT_TYPE = "application/json"
BINARY_CONTENT_TYPE = "application/octet-stream"
HEADER_LENGTH_HEADER = "inference-header-content-length"

Buffer = bytes | bytearray | memoryview

_MAX_RANK = 64  # numpy's limit
_MAX_BYTES = 2**63 - 1
_ALIGN = 64
_JSON = json.JSONDecoder()


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool | None  # the output's parameters.binary_data; None = the request default
    region: RegionRef | None = None  # written into system shared memory (shm.py), not sent


@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray]  # validated against the signature, ready for ORT
    outputs: list[RequestedOutput] | None  # None = all outputs
    parameters: dict[str, Any]  # request-level: "timeout" (µs), "binary_data_output", ...
    binary_output: bool = False  # default for outputs without their own binary_data


def parse_header_length(value: str | bytes | None) -> int | None:
    """The Inference-Header-Content-Length header as an int; None when the header is absent."""
    if value is None:
        return None
    text = (value.decode("latin-1") if isinstance(value, bytes) else value).strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        raise ProtocolError(
            f"Inference-Header-Content-Length must be a byte count, got {text[:40]!r}"
        )
    return int(text)


def body_buffer(size: int, header_length: int | None = None) -> memoryview:
    """A writable buffer of ``size`` bytes whose byte ``header_length`` is 64-byte aligned.

    Read a request body into it (``buf[pos:pos + len(chunk)] = chunk``) so that the first
    binary tensor, and every one after it whose offset stays a multiple of its item size, is
    decoded without a copy.
    """
    raw = np.empty(size + _ALIGN, dtype=np.uint8)
    shift = -(raw.ctypes.data + (header_length or 0)) % _ALIGN
    return raw[shift : shift + size].data


def decode_infer_request(
    body: Buffer,
    header_length: int | None,
    signature: Signature,
    *,
    allow_nonfinite: bool = True,
    regions: SharedMemory | None = None,
) -> InferRequest:
    """Parse and validate an infer request body against ``signature``.

    ``header_length`` is the Inference-Header-Content-Length: None for a pure JSON body, the
    JSON header's size when binary tensors follow it, 0 for Triton's raw binary request (the
    whole body is the data of a model's single, fixed-shape input). ``regions``: the server's
    shared memory, where inputs and outputs naming a region lie (None: such requests are
    refused).
    """
    view = memoryview(body).cast("B")
    size = view.nbytes
    if header_length == 0:
        return _decode_raw(view, signature, allow_nonfinite)
    if header_length is None:
        doc = _parse_json(body if isinstance(body, bytes) else view.tobytes())
        cursor = size
    else:
        if not 0 < header_length <= size:
            raise ProtocolError(
                f"Inference-Header-Content-Length {header_length} does not fit a {size} byte body"
            )
        doc = _parse_json(view[:header_length].tobytes())
        cursor = header_length
    data = _BodyData(view, cursor, header_length)
    return decode_document(doc, signature, data, allow_nonfinite=allow_nonfinite, regions=regions)


class BinaryData(Protocol):
    """Where the binary data of a request's inputs lies: after the JSON header of a REST body
    (``Inference-Header-Content-Length``), or in a gRPC request's ``raw_input_contents``."""

    def take(self, name: str, nbytes: int) -> memoryview:
        """The next binary input's ``nbytes`` bytes; ProtocolError naming ``name`` if absent."""
        ...

    def finish(self) -> None:
        """ProtocolError when data is left that no input declared."""
        ...


def decode_document(
    doc: Any,
    signature: Signature,
    data: BinaryData,
    *,
    allow_nonfinite: bool = True,
    regions: SharedMemory | None = None,
) -> InferRequest:
    """Validate a request's JSON document (the REST header, or a gRPC request in the same
    shape) against ``signature``; an input with ``parameters.binary_data_size`` takes its
    bytes from ``data``, one with ``parameters.shared_memory_region`` from ``regions``, the
    others carry ``data`` lists."""
    if not isinstance(doc, dict):
        raise ProtocolError("request body must be a JSON object")

    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError("request 'id' must be a string")
    parameters = _request_parameters(doc.get("parameters"))
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list):
        raise ProtocolError(
            "request has no 'inputs' list", hint=f"the model's inputs are {signature.input_names}"
        )

    specs = {spec.name: spec for spec in signature.inputs}
    inputs: dict[str, np.ndarray] = {}
    bound: dict[str, tuple[int, str]] = {}
    for index, entry in enumerate(raw_inputs):
        spec, shape, count = _input_header(entry, index, specs, inputs, bound)
        params = entry.get("parameters")
        if params is None:
            params = {}
        elif not isinstance(params, dict):
            raise ProtocolError(f"input {spec.name!r} 'parameters' must be an object")
        ref = region_ref("input", spec.name, params)
        if ref is not None and regions is None:
            raise _no_shared_memory("input", spec.name)
        has_binary = "binary_data_size" in params
        if has_binary + ("data" in entry) + (ref is not None) != 1:
            raise ProtocolError(
                f"input {spec.name!r} must set exactly one of 'data', "
                "parameters.binary_data_size and parameters.shared_memory_region"
            )
        if ref is not None:
            assert regions is not None
            array = from_binary(spec, shape, count, regions.read(spec.name, ref))
        elif has_binary:
            nbytes = params["binary_data_size"]
            if type(nbytes) is not int or nbytes < 0:
                raise ProtocolError(
                    f"input {spec.name!r} binary_data_size must be a non-negative integer"
                )
            array = from_binary(spec, shape, count, data.take(spec.name, nbytes))
        else:
            array = from_json(spec, shape, count, entry["data"])
        if not allow_nonfinite:
            check_finite(spec.name, array)
        inputs[spec.name] = array

    if len(inputs) != len(specs):  # unknown and repeated names are already refused
        missing = next(name for name in specs if name not in inputs)
        raise ProtocolError(f"missing input {missing!r}", hint=f"give every input: {list(specs)}")
    data.finish()
    return InferRequest(
        id=request_id,
        inputs=inputs,
        outputs=_requested_outputs(doc.get("outputs"), signature, regions),
        parameters=parameters,
        binary_output=parameters.get("binary_data_output", False),
    )


class _BodyData:
    """The binary data after a REST body's JSON header, taken in order."""

    def __init__(self, view: memoryview, cursor: int, header_length: int | None) -> None:
        self.view = view
        self.cursor = cursor
        self.header_length = header_length

    def take(self, name: str, nbytes: int) -> memoryview:
        if self.header_length is None:
            raise ProtocolError(
                f"input {name!r} is binary but the request has no "
                "Inference-Header-Content-Length header",
                hint="set it to the size of the JSON header",
            )
        size, cursor = self.view.nbytes, self.cursor
        if cursor + nbytes > size:
            raise ProtocolError(
                f"input {name!r} declares {nbytes} bytes of binary data but only "
                f"{size - cursor} remain in the body"
            )
        self.cursor = cursor + nbytes
        return self.view[cursor : self.cursor]

    def finish(self) -> None:
        left = self.view.nbytes - self.cursor
        if left:
            raise ProtocolError(
                f"request has {left} bytes of binary data that no input declares",
                hint="binary_data_size of the inputs must add up to the data after the header",
            )


class RequestDecoder:
    """``decode_infer_request`` for one model that remembers the binary layouts it has seen.

        decoder = RequestDecoder(model.signature, allow_nonfinite=False)
        request = decoder.decode(body, header_length)

    Clients send byte-identical JSON headers for requests of the same shapes (tritonclient,
    perf_analyzer), so a request whose header was seen before skips JSON parsing and header
    validation; its data is still checked (size, BOOL bytes, non-finite values). Only
    requests whose inputs are all binary and not BYTES are remembered, at most ``size``
    headers, the oldest forgotten first.
    """

    def __init__(self, signature: Signature, *, allow_nonfinite: bool = True, size: int = 64):
        self.signature = signature
        self.allow_nonfinite = allow_nonfinite
        self._size = size
        self._layouts: dict[bytes, _Layout] = {}

    def decode(
        self, body: Buffer, header_length: int | None, regions: SharedMemory | None = None
    ) -> InferRequest:
        """As ``decode_infer_request``: the validated request, or ProtocolError."""
        view = memoryview(body).cast("B")
        nonfinite = self.allow_nonfinite
        if header_length is None or not 0 < header_length <= min(view.nbytes, _MAX_CACHED):
            return decode_infer_request(
                body, header_length, self.signature, allow_nonfinite=nonfinite, regions=regions
            )
        key = view[:header_length].tobytes()
        layout = self._layouts.get(key)
        if layout is not None and layout.data_bytes == view.nbytes - header_length:
            return layout.decode(view, header_length, self.allow_nonfinite)
        request = decode_infer_request(
            body, header_length, self.signature, allow_nonfinite=nonfinite, regions=regions
        )
        layout = _Layout.of(request, self.signature, view.nbytes - header_length)
        if layout is not None:
            if len(self._layouts) >= self._size:
                del self._layouts[next(iter(self._layouts))]
            self._layouts[key] = layout
        return request


_MAX_CACHED = 4096  # longer headers (many inputs, long ids) are decoded every time


@dataclass(frozen=True)
class _Layout:
    """Where each input of a remembered header lies in the data after it."""

    request: InferRequest  # id, outputs, parameters; no inputs (they hold the old body)
    inputs: tuple[tuple[TensorSpec, tuple[int, ...], int], ...]  # spec, shape, byte size
    data_bytes: int

    @classmethod
    def of(cls, request: InferRequest, signature: Signature, data_bytes: int) -> _Layout | None:
        """The layout of a decoded request, or None when its inputs are not all plain binary
        (JSON data lives in the header; BYTES sizes depend on the data)."""
        specs = {spec.name: spec for spec in signature.inputs}
        inputs = []
        for name, array in request.inputs.items():
            spec = specs[name]
            if spec.dtype.kind == "string":
                return None
            inputs.append((spec, tuple(array.shape), array.nbytes))
        if sum(nbytes for _, _, nbytes in inputs) != data_bytes:
            return None  # some input came as JSON data
        r = request
        header = InferRequest(r.id, {}, r.outputs, r.parameters, r.binary_output)
        return cls(header, tuple(inputs), data_bytes)

    def decode(self, view: memoryview, offset: int, allow_nonfinite: bool) -> InferRequest:
        arrays: dict[str, np.ndarray] = {}
        for spec, shape, nbytes in self.inputs:
            count = nbytes // spec.dtype.numpy.itemsize
            array = from_binary(spec, list(shape), count, view[offset : offset + nbytes])
            if not allow_nonfinite:
                check_finite(spec.name, array)
            arrays[spec.name] = array
            offset += nbytes
        r = self.request
        return InferRequest(r.id, arrays, r.outputs, dict(r.parameters), r.binary_output)


# -- decoding -------------------------------------------------------------------------------


def _parse_json(data: bytes) -> Any:
    try:
        return _JSON.decode(data.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
        raise ProtocolError(f"request header is not valid JSON ({e})") from None


def _show(value: Any) -> str:
    """A short, safe rendering of a client's JSON value for an error message."""
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:40]) + "..."
    if isinstance(value, list | dict):
        return "a list" if isinstance(value, list) else "an object"
    return json.dumps(value)[:40]


def _request_parameters(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError("request 'parameters' must be an object")
    if not isinstance(value.get("binary_data_output", False), bool):
        raise ProtocolError("request parameter 'binary_data_output' must be true or false")
    timeout = value.get("timeout", 0)
    if type(timeout) is not int or timeout < 0:
        raise ProtocolError("request parameter 'timeout' must be a non-negative integer (µs)")
    return value


def _input_header(
    entry: Any,
    index: int,
    specs: dict[str, TensorSpec],
    seen: dict[str, np.ndarray],
    bound: dict[str, tuple[int, str]],
) -> tuple[TensorSpec, list[int], int]:
    """The spec, shape and element count of one request input, checked against the model."""
    if type(entry) is not dict or type(entry.get("name")) is not str:
        raise ProtocolError(f"inputs[{index}] must be an object with a 'name'")
    name = entry["name"]
    spec = specs.get(name)
    if spec is None:
        raise ProtocolError(
            f"unknown input {_show(name)}", hint=f"the model's inputs are {list(specs)}"
        )
    if name in seen:
        raise ProtocolError(f"input {name!r} is given twice")
    expected = spec.dtype.v2
    if expected is None:
        raise ProtocolError(
            f"input {name!r} has ONNX type {spec.dtype.onnx_name}, which the V2 protocol "
            "cannot carry"
        )
    datatype = entry.get("datatype")
    if datatype != expected:
        raise ProtocolError(f"input {name!r} expects datatype {expected}, got {_show(datatype)}")
    shape = entry.get("shape")
    if type(shape) is not list:
        raise ProtocolError(f"input {name!r} needs a 'shape' list of integers")
    if len(shape) > _MAX_RANK:
        raise ProtocolError(f"input {name!r} has rank {len(shape)}, more than {_MAX_RANK}")
    if not all(type(d) is int for d in shape):  # before any message shows the shape
        raise ProtocolError(f"input {name!r} needs a 'shape' list of integers")
    count = 1
    nbytes = spec.dtype.numpy.itemsize  # as numpy counts it: zero dims do not hide overflow
    for d in shape:
        if d < 0:
            raise ProtocolError(f"input {name!r} has a negative dimension in shape {shape}")
        count *= d
        nbytes *= d or 1
        if nbytes > _MAX_BYTES:
            raise ProtocolError(f"input {name!r} shape {shape} is too large for a tensor")
    if spec.shape is not None:
        _check_dims(spec, shape, bound)
    return spec, shape, count


def _check_dims(spec: TensorSpec, shape: list[int], bound: dict[str, tuple[int, str]]) -> None:
    assert spec.shape is not None
    name = spec.name
    if len(shape) != len(spec.shape):
        raise ProtocolError(
            f"input {name!r} expects rank {len(spec.shape)} {spec.shape_text()}, "
            f"got rank {len(shape)} {shape}"
        )
    for axis, (want, have) in enumerate(zip(spec.shape, shape, strict=True)):
        if isinstance(want, int) and want != have:
            raise ProtocolError(
                f"input {name!r} expects shape {spec.shape_text()}, got {shape} "
                f"(dim {axis} must be {want})"
            )
        if isinstance(want, str) and want:
            first = bound.setdefault(want, (have, name))
            if first[0] != have:
                raise ProtocolError(
                    f"input {name!r} has {want}={have} at dim {axis}, but input "
                    f"{first[1]!r} has {want}={first[0]}",
                    hint=f"every input must agree on the size of {want!r}",
                )


def _requested_outputs(
    value: Any, signature: Signature, regions: SharedMemory | None = None
) -> list[RequestedOutput] | None:
    if value is None:
        return None
    if type(value) is not list:
        raise ProtocolError("request 'outputs' must be a list")
    known = {spec.name for spec in signature.outputs}
    requested: dict[str, RequestedOutput] = {}
    for index, entry in enumerate(value):
        if type(entry) is not dict or type(entry.get("name")) is not str:
            raise ProtocolError(f"outputs[{index}] must be an object with a 'name'")
        name = entry["name"]
        if name not in known:
            raise ProtocolError(
                f"unknown output {_show(name)}",
                hint=f"the model's outputs are {signature.output_names}",
            )
        if name in requested:
            raise ProtocolError(f"output {name!r} is requested twice")
        params = entry.get("parameters")
        if params is None:
            params = {}
        elif type(params) is not dict:
            raise ProtocolError(f"output {name!r} 'parameters' must be an object")
        if "classification" in params:
            raise ProtocolError(
                f"output {name!r} asks for classification, which this server does not support"
            )
        ref = region_ref("output", name, params)
        if ref is not None and regions is None:
            raise _no_shared_memory("output", name)
        binary = params.get("binary_data")
        if binary is not None and type(binary) is not bool:
            raise ProtocolError(f"output {name!r} parameter 'binary_data' must be true or false")
        requested[name] = RequestedOutput(name, binary, ref)
    return list(requested.values()) or None


def _no_shared_memory(kind: str, name: str) -> ProtocolError:
    return ProtocolError(
        f"{kind} {name!r} names a shared memory region, which this request cannot use (gRPC, "
        "or a JSON header over 1 MiB)",
        hint="send the data in the request body, or use REST with a short header",
    )


def _decode_raw(view: memoryview, signature: Signature, allow_nonfinite: bool) -> InferRequest:
    """Triton's raw binary request: the body is the data of the model's only input."""
    specs = signature.inputs
    if len(specs) != 1 or not specs[0].is_static or specs[0].dtype.v2 is None:
        raise ProtocolError(
            "a raw binary request (Inference-Header-Content-Length: 0) needs a model with "
            "one input of fixed shape",
            hint="send a JSON header describing the inputs",
        )
    spec = specs[0]
    shape = [d for d in spec.shape or () if isinstance(d, int)]
    count = 1
    for d in shape:
        count *= d
    array = from_binary(spec, shape, count, view)
    if not allow_nonfinite:
        check_finite(spec.name, array)
    return InferRequest(None, {spec.name: array}, None, {}, binary_output=True)
