"""KServe V2 infer responses: outputs as JSON data or Triton's binary tensor data.

    body, headers = encode_infer_response(
        model_name="mlp", model_version="1", request_id=request.id, outputs=outputs,
        requested=request.outputs, binary_default=request.binary_output)
    response_floor(outputs, request.outputs, request.binary_output)   # bytes, at least

Outputs come in the requested order (else in the model's), each binary or JSON as the request
asks (``RequestedOutput.binary``, else its ``binary_data_output``). Binary ones are raw
little-endian bytes after the JSON header, whose size the
``Inference-Header-Content-Length`` header gives. FP16 and BF16 go as JSON numbers too,
NaN and Infinity as tritonclient reads them. An output with a shared memory region
(``RequestedOutput.region``) is written there (``regions``, shm.py) and listed without data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from .protocol import (
    BINARY_CONTENT_TYPE,
    HEADER_LENGTH_HEADER,
    JSON_CONTENT_TYPE,
    Buffer,
    RequestedOutput,
)
from .shm import RegionRef, SharedMemory
from .tensors import ProtocolError, binary_payload, json_payload, v2_datatype

_ENCODE_SLICE = 1 << 16  # output elements per JSON encoder call (a few ms)
_JSON_OUT = json.JSONEncoder(separators=(",", ":"))  # NaN, Infinity: tritonclient reads them
_quote = json.encoder.encode_basestring_ascii


def encode_infer_response(
    *,
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: Mapping[str, np.ndarray],
    requested: list[RequestedOutput] | None,
    binary_default: bool,
    parameters: Mapping[str, Any] | None = None,
    regions: SharedMemory | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers ("content-type", and "inference-header-content-length"
    when any output is binary). Outputs come in ``requested`` order, else in ``outputs`` order;
    binary ones as raw little-endian bytes after the JSON header, the others as flat JSON data."""
    items = _response_items(outputs, requested, binary_default)

    # The header is written by hand: json.dumps of the dict costs more than the whole rest.
    described: list[str] = []
    chunks: list[Buffer] = [b""]
    for name, array, binary, region in items:
        datatype = v2_datatype(name, array.dtype)
        shape = ",".join([str(d) for d in array.shape])
        head = f'{{"name":{_quote(name)},"datatype":"{datatype}","shape":[{shape}]'
        if region is not None:  # no parameters: Triton's C++ client takes them as binary
            _write_shared(name, array, datatype, region, regions)
            described.append(head + "}")
        elif binary:
            payload = binary_payload(name, array, datatype)
            described.append(f'{head},"parameters":{{"binary_data_size":{payload.nbytes}}}}}')
            chunks.append(payload)
        else:
            data = _json_data(name, array, datatype)
            described.append(f'{head},"data":{data}}}')
    fields = [] if request_id is None else [f'"id":{_quote(request_id)}']
    fields.append(f'"model_name":{_quote(model_name)},"model_version":{_quote(model_version)}')
    if parameters:
        fields.append(f'"parameters":{_JSON_OUT.encode(dict(parameters))}')
    fields.append(f'"outputs":[{",".join(described)}]')
    header = ("{" + ",".join(fields) + "}").encode()
    if len(chunks) == 1:  # no binary output
        return header, {"content-type": JSON_CONTENT_TYPE}
    chunks[0] = header
    headers = {"content-type": BINARY_CONTENT_TYPE, HEADER_LENGTH_HEADER: str(len(header))}
    return b"".join(chunks), headers


def response_floor(
    outputs: Mapping[str, np.ndarray], requested: list[RequestedOutput] | None, binary_default: bool
) -> int:
    """A lower bound on the size of ``encode_infer_response``'s body, without encoding it.

        if response_floor(outputs, request.outputs, request.binary_output) > limit: refuse

    Binary outputs count their bytes (BYTES at least a 4-byte length per element), JSON ones
    two bytes per element (a digit and a comma), so an answer far past a limit is refused
    before it is built."""
    total = 0
    for _, array, binary, region in _response_items(outputs, requested, binary_default):
        if region is not None:
            continue
        if not binary:
            total += 2 * array.size
        elif array.dtype == object:
            total += 4 * array.size
        else:
            total += array.nbytes
    return total


def _response_items(
    outputs: Mapping[str, np.ndarray], requested: list[RequestedOutput] | None, binary_default: bool
) -> list[tuple[str, np.ndarray, bool, RegionRef | None]]:
    """(name, array, binary, shared memory region) of each output a response carries, in its
    order."""
    if requested is None:
        return [(name, array, binary_default, None) for name, array in outputs.items()]
    items = []
    for want in requested:
        if want.name not in outputs:
            raise ProtocolError(f"output {want.name!r} was requested but not produced")
        binary = binary_default if want.binary is None else want.binary
        items.append((want.name, outputs[want.name], binary, want.region))
    return items


def _write_shared(
    name: str, array: np.ndarray, datatype: str, ref: RegionRef, regions: SharedMemory | None
) -> None:
    """Write an output into its shared memory region (as binary data lays it out)."""
    if regions is None:
        raise ProtocolError(f"output {name!r} names a shared memory region this server lacks")
    regions.write(name, ref, binary_payload(name, array, datatype))


def _json_data(name: str, array: np.ndarray, datatype: str) -> str:
    """An output's flat JSON data, encoded a slice at a time: each slice is one call that
    holds the GIL, so a large output encoded in a worker thread lets the event loop run."""
    flat = array.reshape(-1)
    if flat.size <= _ENCODE_SLICE:
        return _JSON_OUT.encode(json_payload(name, flat, datatype))
    pieces = []
    for start in range(0, flat.size, _ENCODE_SLICE):
        piece = flat[start : start + _ENCODE_SLICE]
        pieces.append(_JSON_OUT.encode(json_payload(name, piece, datatype))[1:-1])
    return "[" + ",".join(pieces) + "]"


def error_body(message: str) -> bytes:
    """The V2 error object, ``{"error": message}``, as bytes."""
    return json.dumps({"error": message}).encode()
