"""KServe V2 gRPC messages to what the REST path validates, and answers back to messages.

    doc, data = request_document(message)                # message: a ModelInferRequest
    request = decode_document(doc, signature, data)      # protocol.py: ProtocolError if bad
    reply = infer_response("mlp", "1", request.id, outputs)  # a ModelInferResponse

The messages are Triton's generated classes (``tritonclient.grpc.service_pb2`` and
``model_config_pb2``), not a copy of the .proto files: they are the exact proto Triton's
clients (tritonclient, perf_analyzer) speak, and tritonclient is already the server's
dependency. A request becomes the JSON document a REST client sends, so one validator
(``protocol.decode_document``) checks both with the same one-line messages: typed
``contents`` become ``data`` lists (checked for range, count and finiteness as JSON data is),
``raw_input_contents`` binary data, one entry per input in the order of ``inputs``, all
inputs raw or none (as Triton has it). FP16 and BF16 have no typed field and travel raw.
Outputs always travel raw in ``raw_output_contents``, as Triton sends them; BYTES elements
each after a 4-byte little-endian length (``tensors.binary_payload``).

Metadata, configuration, statistics and the repository index are the app's JSON answers
(``ServeApp.model_config`` ...) parsed into their messages, so REST and gRPC cannot drift.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from google.protobuf import json_format
from google.protobuf.message import Message
from tritonclient.grpc import model_config_pb2, service_pb2

from .tensors import ProtocolError, binary_payload, v2_datatype

TYPED_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
"""The ``InferTensorContents`` field that carries each V2 datatype (FP16, BF16: none)."""


class RawContents:
    """A request's ``raw_input_contents``, taken in the order of its inputs (``BinaryData``)."""

    def __init__(self, raw: Sequence[bytes]) -> None:
        self.raw = raw
        self.taken = 0

    def take(self, name: str, nbytes: int) -> memoryview:
        if self.taken >= len(self.raw):
            raise ProtocolError(f"input {name!r} has no raw_input_contents entry")
        data = memoryview(self.raw[self.taken])
        self.taken += 1
        return data

    def finish(self) -> None:
        if self.taken != len(self.raw):
            raise ProtocolError(
                f"the request has {len(self.raw)} raw_input_contents for {self.taken} inputs"
            )


def request_document(message: Any) -> tuple[dict[str, Any], RawContents]:
    """A ModelInferRequest as the REST request document, and its raw input data. The raw
    contents are read once (protobuf copies bytes fields on every read)."""
    raw: list[bytes] = list(message.raw_input_contents)
    inputs = message.inputs
    if raw and len(raw) != len(inputs):
        raise ProtocolError(
            f"the request has {len(raw)} raw_input_contents for {len(inputs)} inputs",
            hint="send every input in raw_input_contents, or none",
        )
    entries = []
    for index, tensor in enumerate(inputs):
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        params = parameters(tensor.parameters)
        if raw:
            if tensor.HasField("contents") and tensor.contents.ListFields():
                raise ProtocolError(
                    f"input {tensor.name!r} has contents while the request sends "
                    "raw_input_contents",
                    hint="send every input in raw_input_contents, or none",
                )
            params["binary_data_size"] = len(raw[index])
        else:
            entry["data"] = _typed(tensor)
        if params:
            entry["parameters"] = params
        entries.append(entry)
    doc: dict[str, Any] = {"inputs": entries}
    if message.id:
        doc["id"] = message.id
    if message.parameters:
        doc["parameters"] = parameters(message.parameters)
    if message.outputs:
        doc["outputs"] = [
            {"name": o.name, "parameters": parameters(o.parameters)} for o in message.outputs
        ]
    return doc, RawContents(raw)


def parameters(values: Mapping[str, Any]) -> dict[str, Any]:
    """A map of InferParameter messages as plain values (None where none is set)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        which = value.WhichOneof("parameter_choice")
        out[key] = None if which is None else getattr(value, which)
    return out


def _typed(tensor: Any) -> list[Any]:
    """An input's typed contents as a JSON-like ``data`` list, from the one field its datatype
    uses (BYTES elements decoded as UTF-8, as ONNX Runtime string tensors hold text)."""
    name, datatype = tensor.name, tensor.datatype
    given = [field.name for field, _ in tensor.contents.ListFields()]
    wanted = TYPED_CONTENTS.get(datatype)
    if wanted is None:
        if datatype in ("FP16", "BF16"):
            raise ProtocolError(
                f"input {name!r} is {datatype}, which has no typed contents in gRPC",
                hint="send it in raw_input_contents",
            )
        return []  # an unknown datatype: the document's validation names it
    others = [f for f in given if f != wanted]
    if others:
        raise ProtocolError(
            f"input {name!r} of datatype {datatype} carries {others[0]}; use {wanted}",
        )
    values = list(getattr(tensor.contents, wanted))
    if datatype != "BYTES":
        return values
    texts = []
    for i, item in enumerate(values):
        try:
            texts.append(item.decode("utf-8"))
        except UnicodeDecodeError:
            raise ProtocolError(
                f"input {name!r} BYTES element {i} is not UTF-8",
                hint="ONNX Runtime string tensors hold text",
            ) from None
    return texts


def response_bytes(outputs: Mapping[str, np.ndarray]) -> int:
    """The raw bytes ``infer_response`` would carry, at least (BYTES: 4 per element)."""
    return sum(4 * a.size if a.dtype == object else a.nbytes for a in outputs.values())


def infer_response(
    model: str, version: str, request_id: str | None, outputs: Mapping[str, np.ndarray]
) -> Any:
    """The ModelInferResponse carrying ``outputs`` (in their order) as raw contents."""
    response = service_pb2.ModelInferResponse(
        model_name=model, model_version=version, id=request_id or ""
    )
    for name, array in outputs.items():
        datatype = v2_datatype(name, array.dtype)
        response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        payload = binary_payload(name, array, datatype)
        response.raw_output_contents.append(payload.tobytes())
    return response


def model_metadata(meta: Mapping[str, Any]) -> Any:
    """ServeApp.model_metadata's answer as a ModelMetadataResponse."""
    return _parse(meta, service_pb2.ModelMetadataResponse())


def server_metadata(meta: Mapping[str, Any]) -> Any:
    """ServeApp.server_metadata's answer as a ServerMetadataResponse."""
    return _parse(meta, service_pb2.ServerMetadataResponse())


def model_config(config: Mapping[str, Any]) -> Any:
    """ServeApp.model_config's answer (model_config.proto as JSON) as a ModelConfigResponse."""
    return service_pb2.ModelConfigResponse(config=_parse(config, model_config_pb2.ModelConfig()))


def model_statistics(stats: Sequence[Mapping[str, Any]]) -> Any:
    """ServeApp.model_statistics's entries as a ModelStatisticsResponse."""
    return _parse({"model_stats": list(stats)}, service_pb2.ModelStatisticsResponse())


def repository_index(index: Sequence[Mapping[str, Any]], ready_only: bool) -> Any:
    """The repository's index as a RepositoryIndexResponse (only READY versions when asked)."""
    models = [m for m in index if not ready_only or m.get("state") == "READY"]
    return _parse({"models": models}, service_pb2.RepositoryIndexResponse())


def _parse(data: Mapping[str, Any], message: Message) -> Any:
    """``data`` (the REST answer) into ``message``; fields the proto lacks are left out."""
    return json_format.ParseDict(data, message, ignore_unknown_fields=True)
