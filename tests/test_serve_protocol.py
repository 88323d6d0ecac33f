"""The V2 codec against the real tritonclient: what it sends we decode, what we send it reads.

Every datatype goes both ways in JSON and binary; every malformed request gets a ProtocolError
naming the tensor; hypothesis checks that no body raises anything else.
"""

from __future__ import annotations

import gzip
import json
import struct
import zlib
from typing import Any

import ml_dtypes
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton
from hypothesis import given, settings
from hypothesis import strategies as st

from onnxferry.serve import protocol
from onnxferry.serve.inflate import BodyTooLarge, decompress
from onnxferry.serve.metadata import model_metadata
from onnxferry.serve.protocol import (
    BINARY_CONTENT_TYPE,
    HEADER_LENGTH_HEADER,
    JSON_CONTENT_TYPE,
    InferRequest,
    ProtocolError,
    RequestDecoder,
    RequestedOutput,
    body_buffer,
    decode_infer_request,
    parse_header_length,
)
from onnxferry.serve.responses import encode_infer_response, error_body
from onnxferry.signature import Dim, Signature, TensorSpec, dtype_from_numpy, dtype_from_v2
from tests.helpers import onnx_text

DATATYPES = [
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BF16",
    "BYTES",
]
Client = triton.InferenceServerClient


def spec(name: str, datatype: str, shape: tuple[Dim, ...] | None) -> TensorSpec:
    return TensorSpec(name, dtype_from_v2(datatype), shape)


def identity_signature(datatype: str, shape: tuple[Dim, ...] | None = ("batch", 3)) -> Signature:
    return Signature((spec("x", datatype, shape),), (spec("y", datatype, shape),))


def sample(datatype: str) -> np.ndarray:
    """A 2x3 array of ``datatype`` with its edge values."""
    if datatype == "BYTES":
        return np.array(["", "héllo", "a b", "€", "x" * 300, "0"], dtype=object).reshape(2, 3)
    if datatype == "BOOL":
        return np.array([[True, False, True], [False, False, True]])
    dtype = dtype_from_v2(datatype).numpy
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.array([info.min, info.max, 0, 1, info.max // 3, 7], dtype=dtype).reshape(2, 3)
    values = np.array([-0.0, 0.1, -2.25, 3e-3, 1.0e4, 65504.0], dtype=np.float32)
    return values.astype(dtype).reshape(2, 3)


def client_request(
    arrays: dict[str, np.ndarray],
    binary: bool | dict[str, bool] = True,
    outputs: list[triton.InferRequestedOutput] | None = None,
    **kwargs: Any,
) -> tuple[bytes, int | None]:
    """The body and Inference-Header-Content-Length tritonclient sends for ``arrays``."""
    inputs = []
    for name, array in arrays.items():
        datatype = dtype_from_numpy(array.dtype).v2
        item = triton.InferInput(name, list(array.shape), datatype)
        as_binary = binary if isinstance(binary, bool) else binary[name]
        item.set_data_from_numpy(array, binary_data=as_binary)
        inputs.append(item)
    body, header_length = Client.generate_request_body(inputs, outputs=outputs, **kwargs)
    return body, header_length


def encode(
    outputs: dict[str, np.ndarray],
    requested: list[RequestedOutput] | None = None,
    binary: bool = True,
) -> tuple[bytes, dict[str, str]]:
    """The response model "m" version 1 sends for ``outputs`` (no request id)."""
    return encode_infer_response(
        model_name="m",
        model_version="1",
        request_id=None,
        outputs=outputs,
        requested=requested,
        binary_default=binary,
    )


def client_result(body: bytes, headers: dict[str, str]) -> Any:
    length = headers.get(HEADER_LENGTH_HEADER)
    return Client.parse_response_body(body, header_length=None if length is None else int(length))


def as_text(array: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else v for v in array.reshape(-1).tolist()]


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    if want.dtype == object:
        assert as_text(got) == as_text(want)
    else:
        assert got.dtype == want.dtype
        assert got.tobytes() == want.tobytes()


# -- tritonclient -> decode ----------------------------------------------------------------

CLIENT_ENCODINGS = [
    (datatype, binary)
    for datatype in DATATYPES
    for binary in (True, False)
    if not (datatype == "BF16" and not binary)  # tritonclient sends BF16 only as binary
]


@pytest.mark.parametrize(("datatype", "binary"), CLIENT_ENCODINGS)
def test_decodes_every_datatype_tritonclient_sends(datatype: str, binary: bool) -> None:
    want = sample(datatype)
    body, header_length = client_request({"x": want}, binary=binary)
    request = decode_infer_request(body, header_length, identity_signature(datatype))
    got = request.inputs["x"]
    assert_same(got, want)
    if datatype == "BYTES":
        assert got.dtype == object
        assert all(type(v) is str for v in got.reshape(-1))  # what ORT string tensors need
    else:
        assert got.dtype == dtype_from_v2(datatype).numpy


def test_decodes_bf16_and_fp16_sent_as_json_numbers() -> None:
    for datatype in ("BF16", "FP16"):
        want = sample(datatype)
        body = json.dumps(
            {
                "inputs": [
                    {
                        "name": "x",
                        "datatype": datatype,
                        "shape": [2, 3],
                        "data": want.astype(np.float32).tolist(),
                    }
                ]
            }
        ).encode()
        got = decode_infer_request(body, None, identity_signature(datatype)).inputs["x"]
        assert_same(got, want)


def test_decodes_bytes_elements_given_as_bytes_into_str() -> None:
    want = np.array([b"plain", "ünï".encode()], dtype=object)
    for binary in (True, False):
        body, header_length = client_request({"x": want}, binary=binary)
        got = decode_infer_request(body, header_length, identity_signature("BYTES", (2,)))
        assert got.inputs["x"].tolist() == ["plain", "ünï"]


def test_decodes_request_id_parameters_and_requested_outputs() -> None:
    signature = Signature(
        (spec("x", "FP32", ("batch", 3)),),
        (spec("y", "FP32", ("batch", 3)), spec("z", "INT64", ("batch",))),
    )
    outputs = [
        triton.InferRequestedOutput("z", binary_data=False),
        triton.InferRequestedOutput("y"),
    ]
    body, header_length = client_request(
        {"x": sample("FP32")},
        outputs=outputs,
        request_id="req-7",
        timeout=1500,
        parameters={"custom": "yes"},
    )
    request = decode_infer_request(body, header_length, signature)
    assert request.id == "req-7"
    assert request.outputs == [RequestedOutput("z", False), RequestedOutput("y", True)]
    assert request.parameters == {"timeout": 1500, "custom": "yes"}
    assert request.binary_output is False


def test_no_requested_outputs_means_all_in_binary_as_tritonclient_asks() -> None:
    body, header_length = client_request({"x": sample("FP32")}, binary=False)
    request = decode_infer_request(body, header_length, identity_signature("FP32"))
    assert header_length is None
    assert request.outputs is None
    assert request.binary_output is True


def test_decodes_mixed_binary_and_json_inputs_in_order() -> None:
    arrays = {
        name: sample(dt)
        for name, dt in [("a", "FP16"), ("b", "BYTES"), ("c", "INT8"), ("d", "FP64"), ("e", "BOOL")]
    }
    signature = Signature(
        tuple(spec(n, dtype_from_numpy(a.dtype).v2 or "", (2, 3)) for n, a in arrays.items()),
        (),
    )
    pattern = {"a": True, "b": False, "c": True, "d": True, "e": False}
    body, header_length = client_request(arrays, binary=pattern)
    request = decode_infer_request(body, header_length, signature)
    for name, want in arrays.items():
        assert_same(request.inputs[name], want)


def test_binary_inputs_are_views_of_an_aligned_body_buffer() -> None:
    body, header_length = client_request({"x": sample("FP32"), "m": np.arange(6).reshape(2, 3)})
    buffer = body_buffer(len(body), header_length)
    buffer[:] = body
    signature = Signature((spec("x", "FP32", (2, 3)), spec("m", "INT64", (2, 3))), ())
    request = decode_infer_request(buffer, header_length, signature)
    whole = np.frombuffer(buffer, dtype=np.uint8)
    assert all(np.shares_memory(a, whole) for a in request.inputs.values())
    assert_same(request.inputs["x"], sample("FP32"))


def test_misaligned_binary_inputs_are_copied_to_aligned_arrays() -> None:
    body, header_length = client_request({"x": sample("FP64")})
    assert header_length is not None
    raw = np.zeros(len(body) + 16, dtype=np.uint8)
    start = next(i for i in range(16) if (raw.ctypes.data + i + header_length) % 8 == 3)
    raw[start : start + len(body)] = np.frombuffer(body, dtype=np.uint8)
    view = raw[start : start + len(body)].data
    got = decode_infer_request(view, header_length, identity_signature("FP64")).inputs["x"]
    assert got.flags.aligned
    assert not np.shares_memory(got, raw)
    assert_same(got, sample("FP64"))


def test_raw_binary_request_feeds_the_single_fixed_shape_input() -> None:
    want = sample("FP32")
    request = decode_infer_request(want.tobytes(), 0, identity_signature("FP32", (2, 3)))
    assert_same(request.inputs["x"], want)
    assert request.binary_output is True


def test_decoded_inputs_run_in_onnx_runtime_and_answer_tritonclient() -> None:
    proto = onnx_text("""
        <ir_version: 10, opset_import: ["" : 21]>
        g (float[batch, 3] x, string[batch] s) => (float[batch, 3] y, string[batch] t) {
            y = Relu(x)
            t = Identity(s)
        }
    """)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    signature = Signature.from_onnx(proto)
    x = np.array([[-1.0, 2.0, -3.0], [4.0, -5.0, 6.0]], dtype=np.float32)
    s = np.array(["zwölf", ""], dtype=object)
    for binary in (True, False):
        outputs = [
            triton.InferRequestedOutput("t", binary_data=binary),
            triton.InferRequestedOutput("y", binary_data=binary),
        ]
        body, header_length = client_request({"x": x, "s": s}, binary=binary, outputs=outputs)
        request = decode_infer_request(body, header_length, signature)
        names = [o.name for o in request.outputs or []]
        results = dict(zip(names, session.run(names, request.inputs), strict=True))
        response, headers = encode_infer_response(
            model_name="g",
            model_version="1",
            request_id=request.id,
            outputs=results,
            requested=request.outputs,
            binary_default=request.binary_output,
        )
        result = client_result(response, headers)
        np.testing.assert_array_equal(result.as_numpy("y"), np.maximum(x, 0))
        assert as_text(result.as_numpy("t")) == ["zwölf", ""]


# -- encode -> tritonclient ----------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", DATATYPES)
def test_tritonclient_reads_every_datatype_we_send(datatype: str, binary: bool) -> None:
    want = sample(datatype)
    body, headers = encode({"y": want}, binary=binary)
    assert headers["content-type"] == (BINARY_CONTENT_TYPE if binary else JSON_CONTENT_TYPE)
    result = client_result(body, headers)
    got = result.as_numpy("y")
    assert result.get_output("y")["datatype"] == datatype
    assert_same(got, want)
    if datatype == "BYTES":  # tritonclient gives bytes from binary, str from JSON
        assert all(type(v) is (bytes if binary else str) for v in got.reshape(-1))


def test_round_trip_of_every_datatype_through_tritonclient_in_one_request() -> None:
    arrays = {f"t_{dt.lower()}": sample(dt) for dt in DATATYPES}
    signature = Signature(
        tuple(spec(n, dtype_from_numpy(a.dtype).v2 or "", (2, 3)) for n, a in arrays.items()),
        tuple(spec(n, dtype_from_numpy(a.dtype).v2 or "", (2, 3)) for n, a in arrays.items()),
    )
    binary = {n: i % 2 == 0 or n == "t_bf16" for i, n in enumerate(arrays)}
    outputs = [triton.InferRequestedOutput(n, binary_data=not b) for n, b in binary.items()]
    body, header_length = client_request(arrays, binary=binary, outputs=outputs)
    request = decode_infer_request(body, header_length, signature)
    response, headers = encode_infer_response(
        model_name="m",
        model_version="3",
        request_id=request.id,
        outputs=request.inputs,
        requested=request.outputs,
        binary_default=request.binary_output,
    )
    result = client_result(response, headers)
    for name, want in arrays.items():
        assert_same(result.as_numpy(name), want)
        entry = result.get_output(name)
        assert ("data" in entry) == binary[name]


def test_response_header_echoes_id_model_and_parameters() -> None:
    body, headers = encode_infer_response(
        model_name="m",
        model_version="2",
        request_id="abc",
        outputs={"y": sample("INT32")},
        requested=None,
        binary_default=False,
        parameters={"note": "x"},
    )
    assert headers == {"content-type": JSON_CONTENT_TYPE}
    doc = json.loads(body)
    assert [doc["id"], doc["model_name"], doc["model_version"], doc["parameters"]] == [
        "abc",
        "m",
        "2",
        {"note": "x"},
    ]
    assert doc["outputs"][0]["data"] == sample("INT32").reshape(-1).tolist()


def test_response_header_escapes_names_and_ids() -> None:
    outputs = {'q"\\ü': sample("UINT8")}
    for binary in (True, False):
        body, headers = encode_infer_response(
            model_name="m\n",
            model_version="1",
            request_id='id "x"\n',
            outputs=outputs,
            requested=None,
            binary_default=binary,
        )
        result = client_result(body, headers)
        assert result.get_response()["id"] == 'id "x"\n'
        assert result.get_response()["model_name"] == "m\n"
        np.testing.assert_array_equal(result.as_numpy('q"\\ü'), sample("UINT8"))


def test_response_follows_requested_order_subset_and_per_output_binary() -> None:
    outputs = {"a": sample("FP32"), "b": sample("INT64"), "c": sample("BOOL")}
    requested = [RequestedOutput("c", None), RequestedOutput("a", False)]
    body, headers = encode(outputs, requested=requested, binary=True)
    length = int(headers[HEADER_LENGTH_HEADER])
    doc = json.loads(body[:length])
    assert [o["name"] for o in doc["outputs"]] == ["c", "a"]
    assert doc["outputs"][0]["parameters"] == {"binary_data_size": 6}
    assert body[length:] == sample("BOOL").tobytes()
    assert "data" in doc["outputs"][1]


def test_response_handles_strided_big_endian_and_empty_outputs() -> None:
    outputs = {
        "t": np.arange(12, dtype=np.float32).reshape(3, 4).T,
        "be": np.arange(4, dtype=">i4"),
        "e": np.zeros((0, 5), dtype=np.float16),
        "s": np.array(np.float64(2.5)),
    }
    for binary in (True, False):
        body, headers = encode(outputs, binary=binary)
        result = client_result(body, headers)
        for name, want in outputs.items():
            np.testing.assert_array_equal(result.as_numpy(name), want)


def test_nonfinite_outputs_reach_tritonclient_as_json() -> None:
    want = np.array([np.nan, np.inf, -np.inf, 1.0], dtype=np.float32)
    body, headers = encode({"y": want}, binary=False)
    np.testing.assert_array_equal(client_result(body, headers).as_numpy("y"), want)


def test_output_bytes_that_are_not_utf8_go_binary_only() -> None:
    outputs = {"y": np.array([b"\xff\xfe", b"ok"], dtype=object)}
    body, headers = encode(outputs, binary=True)
    assert client_result(body, headers).as_numpy("y").tolist() == [b"\xff\xfe", b"ok"]
    with pytest.raises(ProtocolError, match="output 'y' element 0 is not UTF-8"):
        encode(outputs, binary=False)


def test_output_of_a_type_v2_cannot_carry_is_an_error() -> None:
    with pytest.raises(ProtocolError, match="output 'c' has dtype complex64"):
        encode({"c": np.zeros(2, np.complex64)}, binary=True)


def test_requested_output_the_model_did_not_produce_is_an_error() -> None:
    with pytest.raises(ProtocolError, match="output 'z' was requested"):
        encode({"y": sample("FP32")}, requested=[RequestedOutput("z", None)], binary=True)


# -- metadata, errors, headers, compression --------------------------------------------------


def test_model_metadata_uses_v2_names_and_minus_one_for_unknown_dims() -> None:
    signature = Signature(
        (spec("x", "FP32", ("batch", 3, None)), spec("s", "BYTES", None)),
        (spec("y", "BF16", (2,)),),
    )
    assert model_metadata("m", ["1", "2"], signature) == {
        "name": "m",
        "versions": ["1", "2"],
        "platform": "onnxruntime_onnx",
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [-1, 3, -1]},
            {"name": "s", "datatype": "BYTES", "shape": [-1]},
        ],
        "outputs": [{"name": "y", "datatype": "BF16", "shape": [2]}],
    }


def test_error_body_is_the_v2_error_object() -> None:
    assert json.loads(error_body('bad "x"\n')) == {"error": 'bad "x"\n'}


def test_parse_header_length() -> None:
    assert parse_header_length(None) is None
    assert parse_header_length("153") == 153
    assert parse_header_length(b" 0 ") == 0
    for bad in ("", "-1", "1.5", "0x10", "9" * 40, "١٢"):
        with pytest.raises(ProtocolError, match="Inference-Header-Content-Length"):
            parse_header_length(bad)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_decodes_bodies_compressed_as_tritonclient_sends_them(encoding: str) -> None:
    body, header_length = client_request({"x": sample("FP32")})
    packed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
    plain = decompress(packed, encoding, limit=1 << 20)
    request = decode_infer_request(plain, header_length, identity_signature("FP32"))
    assert_same(request.inputs["x"], sample("FP32"))


def test_decompress_accepts_raw_deflate_multi_member_gzip_and_identity() -> None:
    raw = zlib.compressobj(wbits=-15)
    assert decompress(raw.compress(b"abc") + raw.flush(), "deflate", 10) == b"abc"
    assert decompress(gzip.compress(b"ab") + gzip.compress(b"cd"), " GZIP ", 10) == b"abcd"
    assert decompress(b"same", None, 10) == b"same"
    assert decompress(b"same", "identity", 4) == b"same"


def test_decompress_refuses_a_zip_bomb() -> None:
    bomb = gzip.compress(bytes(50 << 20))
    assert len(bomb) < 100_000
    with pytest.raises(BodyTooLarge, match="inflates past the 1048576 byte limit"):
        decompress(bomb, "gzip", limit=1 << 20)
    with pytest.raises(BodyTooLarge, match="larger than the 3 byte limit"):
        decompress(b"four", None, limit=3)


def test_decompress_rejects_broken_and_unknown_encodings() -> None:
    packed = gzip.compress(b"hello world" * 10)
    with pytest.raises(ProtocolError, match="gzip request body is truncated"):
        decompress(packed[:-12], "gzip", 1000)
    with pytest.raises(ProtocolError, match="not valid gzip data"):
        decompress(b"not gzip at all", "gzip", 1000)
    with pytest.raises(ProtocolError, match="data after its deflate stream"):
        decompress(zlib.compress(b"x") + b"junk", "deflate", 1000)
    with pytest.raises(ProtocolError, match="unsupported Content-Encoding 'br'"):
        decompress(b"x", "br", 1000)


# -- malformed requests --------------------------------------------------------------------

SIGNATURE = Signature(
    (spec("x", "FP32", ("batch", 3)), spec("m", "INT64", ("batch",))),
    (spec("y", "FP32", ("batch", 3)),),
)


def x_input(**changes: Any) -> dict[str, Any]:
    entry = {"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1.0, 2.0, 3.0]}
    entry.update(changes)
    return {k: v for k, v in entry.items() if v is not None}


def m_input(**changes: Any) -> dict[str, Any]:
    entry = {"name": "m", "datatype": "INT64", "shape": [1], "data": [7]}
    entry.update(changes)
    return {k: v for k, v in entry.items() if v is not None}


def json_request(*inputs: dict[str, Any], **fields: Any) -> bytes:
    return json.dumps({"inputs": list(inputs), **fields}).encode()


def binary_request(*inputs: tuple[dict[str, Any], bytes], extra: bytes = b"") -> tuple[bytes, int]:
    """A body whose inputs carry the given bytes, each declaring its own size."""
    described = []
    for entry, data in inputs:
        entry = {k: v for k, v in entry.items() if k != "data"}
        entry.setdefault("parameters", {}).setdefault("binary_data_size", len(data))
        described.append(entry)
    header = json.dumps({"inputs": described}).encode()
    return header + b"".join(data for _, data in inputs) + extra, len(header)


def rejects(body: bytes, match: str, header_length: int | None = None, **kwargs: Any) -> None:
    with pytest.raises(ProtocolError, match=match) as caught:
        decode_infer_request(body, header_length, SIGNATURE, **kwargs)
    assert "\n" not in str(caught.value)


def test_valid_json_request_for_the_malformed_cases_decodes() -> None:
    request = decode_infer_request(json_request(x_input(), m_input()), None, SIGNATURE)
    assert isinstance(request, InferRequest)
    assert request.inputs["x"].tolist() == [[1.0, 2.0, 3.0]]


def test_rejects_malformed_json() -> None:
    rejects(b'{"inputs": [', "request header is not valid JSON")


def test_rejects_non_utf8_and_deeply_nested_json() -> None:
    rejects(b'{"inputs": "\xff"}', "request header is not valid JSON")
    rejects(b"[" * 100_000 + b"]" * 100_000, "request header is not valid JSON")


def test_rejects_json_that_is_not_an_object() -> None:
    rejects(b"[1, 2]", "request body must be a JSON object")


def test_rejects_request_without_inputs() -> None:
    rejects(
        b'{"outputs": []}', r"request has no 'inputs' list; the model's inputs are \['x', 'm'\]"
    )


def test_rejects_unknown_input() -> None:
    rejects(json_request(x_input(), m_input(), x_input(name="q")), "unknown input 'q'")
    rejects(json_request(x_input(name="n" * 10_000)), r"unknown input 'nnnn.*'\.\.\.; the model")


def test_rejects_duplicate_input() -> None:
    rejects(json_request(x_input(), m_input(), x_input()), "input 'x' is given twice")


def test_rejects_missing_input() -> None:
    rejects(json_request(x_input()), r"missing input 'm'; give every input: \['x', 'm'\]")


def test_rejects_wrong_datatype() -> None:
    rejects(
        json_request(x_input(datatype="FP16"), m_input()),
        "input 'x' expects datatype FP32, got 'FP16'",
    )
    rejects(json_request(x_input(datatype=7), m_input()), "input 'x' expects datatype FP32, got 7")
    rejects(json_request(x_input(datatype=[[]]), m_input()), "FP32, got a list")


def test_rejects_wrong_rank() -> None:
    rejects(
        json_request(x_input(shape=[3]), m_input()),
        r"input 'x' expects rank 2 \[batch, 3\], got rank 1 \[3\]",
    )


def test_rejects_wrong_fixed_dimension() -> None:
    rejects(
        json_request(x_input(shape=[1, 4], data=[1, 2, 3, 4]), m_input()),
        r"input 'x' expects shape \[batch, 3\], got \[1, 4\] \(dim 1 must be 3\)",
    )


def test_rejects_symbolic_dimension_that_differs_between_inputs() -> None:
    rejects(
        json_request(x_input(), m_input(shape=[2], data=[1, 2])),
        "input 'm' has batch=2 at dim 0, but input 'x' has batch=1",
    )


def test_rejects_negative_dimension() -> None:
    rejects(
        json_request(x_input(shape=[-1, 3]), m_input()),
        r"input 'x' has a negative dimension in shape \[-1, 3\]",
    )


def test_rejects_shape_that_is_not_integers() -> None:
    rejects(json_request(x_input(shape=[1.0, 3]), m_input()), "input 'x' needs a 'shape' list")
    rejects(json_request(x_input(shape=[True, 3]), m_input()), "input 'x' needs a 'shape' list")


def test_rejects_shape_whose_element_count_overflows() -> None:
    rejects(
        json_request(x_input(shape=[2**61, 3]), m_input(shape=[2**61])),
        r"input 'x' shape \[2305843009213693952, 3\] is too large for a tensor",
    )


def test_accepts_empty_tensors_but_not_overflowing_dims_beside_a_zero() -> None:
    body = json_request(x_input(shape=[0, 3], data=[]), m_input(shape=[0], data=[]))
    assert decode_infer_request(body, None, SIGNATURE).inputs["x"].shape == (0, 3)
    signature = Signature((spec("x", "FP32", None),), ())
    entry = x_input(shape=[0, 2**62], data=[])
    with pytest.raises(ProtocolError, match=r"input 'x' shape \[0, 4611686018427387904\] is too"):
        decode_infer_request(json_request(entry), None, signature)


def test_rejects_json_data_count_that_does_not_match_shape() -> None:
    rejects(
        json_request(x_input(data=[1.0, 2.0]), m_input()),
        r"input 'x' has 2 values in 'data' but shape \[1, 3\] needs 3",
    )


def test_accepts_json_data_nested_any_way_with_the_right_count() -> None:
    for data in ([[1, 2, 3]], [[1], [2], [3]], [1, 2, 3]):
        request = decode_infer_request(json_request(x_input(data=data), m_input()), None, SIGNATURE)
        assert request.inputs["x"].tolist() == [[1.0, 2.0, 3.0]]


def test_rejects_binary_size_that_does_not_match_shape() -> None:
    body, length = binary_request((x_input(), bytes(8)), (m_input(), bytes(8)))
    rejects(
        body, r"input 'x' has 8 bytes of binary data but shape \[1, 3\] of FP32 needs 12", length
    )


def test_rejects_binary_data_left_over_after_the_inputs() -> None:
    body, length = binary_request((x_input(), bytes(12)), (m_input(), bytes(8)), extra=b"zz")
    rejects(body, "request has 2 bytes of binary data that no input declares", length)


def test_rejects_binary_size_beyond_the_body() -> None:
    body, length = binary_request((x_input(), bytes(12)), (m_input(), bytes(8)))
    rejects(body[:-3], "input 'm' declares 8 bytes of binary data but only 5 remain", length)


def test_rejects_binary_input_without_header_length() -> None:
    header = json.dumps(
        {"inputs": [{**x_input(data=None), "parameters": {"binary_data_size": 12}}, m_input()]}
    )
    rejects(header.encode(), "input 'x' is binary but the request has no Inference-Header")


def test_rejects_header_length_outside_the_body() -> None:
    body, _ = binary_request((x_input(), bytes(12)), (m_input(), bytes(8)))
    rejects(body, "Inference-Header-Content-Length 9999 does not fit", 9999)
    rejects(body, "Inference-Header-Content-Length -4 does not fit", -4)


def test_rejects_bad_binary_data_size() -> None:
    for size in (-1, 1.5, "12", True):
        entry = x_input(data=None, parameters={"binary_data_size": size})
        body = json.dumps({"inputs": [entry, m_input()]}).encode()
        rejects(
            body + bytes(12), "input 'x' binary_data_size must be a non-negative integer", len(body)
        )


def test_rejects_input_with_both_or_neither_data_and_binary() -> None:
    both = x_input(parameters={"binary_data_size": 12})
    rejects(json_request(both, m_input()), "input 'x' must set exactly one of 'data', ")
    rejects(json_request(x_input(data=None), m_input()), "input 'x' must set exactly one of")


def test_rejects_shared_memory_inputs_and_outputs() -> None:
    shm = x_input(
        data=None, parameters={"shared_memory_region": "r", "shared_memory_byte_size": 12}
    )
    # Without the server's regions (shm.py; tests/test_serve_shm.py serves them).
    rejects(json_request(shm, m_input()), "input 'x' names a shared memory region")
    outputs = [{"name": "y", "parameters": {"shared_memory_region": "r"}}]
    rejects(
        json_request(x_input(), m_input(), outputs=outputs),
        "output 'y' shared_memory_byte_size must be a non-negative integer",
    )
    whole = {"shared_memory_region": "r", "shared_memory_byte_size": 12}
    outputs = [{"name": "y", "parameters": whole}]
    rejects(json_request(x_input(), m_input(), outputs=outputs), "output 'y' names a shared memory")


def test_rejects_nonfinite_json_values_when_the_model_forbids_them() -> None:
    body = json_request(x_input(data=[1.0, float("nan"), 3.0]), m_input())
    assert np.isnan(decode_infer_request(body, None, SIGNATURE).inputs["x"][0, 1])
    rejects(
        body, r"input 'x' has a non-finite value \(nan\) at flat index 1", allow_nonfinite=False
    )
    rejects(
        json_request(x_input(data=[1.0, 2.0, 1e300]), m_input()),
        r"input 'x' has a non-finite value \(inf\) at flat index 2",
        allow_nonfinite=False,
    )


def test_rejects_nonfinite_binary_values_when_the_model_forbids_them() -> None:
    x = np.array([1.0, 2.0, -np.inf], dtype=np.float32).tobytes()
    body, length = binary_request((x_input(), x), (m_input(), bytes(8)))
    rejects(
        body,
        r"input 'x' has a non-finite value \(-inf\) at flat index 2",
        length,
        allow_nonfinite=False,
    )
    signature = identity_signature("BF16", (2,))
    nan = np.array([1.0, np.nan], dtype=ml_dtypes.bfloat16)
    body, header_length = client_request({"x": nan})
    with pytest.raises(ProtocolError, match="input 'x' has a non-finite value"):
        decode_infer_request(body, header_length, signature, allow_nonfinite=False)


def test_rejects_unknown_requested_output() -> None:
    rejects(
        json_request(x_input(), m_input(), outputs=[{"name": "nope"}]),
        r"unknown output 'nope'; the model's outputs are \['y'\]",
    )


def test_rejects_duplicate_or_malformed_requested_outputs() -> None:
    rejects(
        json_request(x_input(), m_input(), outputs=[{"name": "y"}, {"name": "y"}]),
        "output 'y' is requested twice",
    )
    rejects(
        json_request(
            x_input(), m_input(), outputs=[{"name": "y", "parameters": {"binary_data": "yes"}}]
        ),
        "output 'y' parameter 'binary_data' must be true or false",
    )
    rejects(
        json_request(
            x_input(), m_input(), outputs=[{"name": "y", "parameters": {"classification": 3}}]
        ),
        "output 'y' asks for classification",
    )
    rejects(
        json_request(x_input(), m_input(), outputs={"name": "y"}),
        "request 'outputs' must be a list",
    )
    rejects(json_request(x_input(), m_input(), outputs=[5]), r"outputs\[0\] must be an object")


def test_rejects_bad_request_id_and_parameters() -> None:
    rejects(json_request(x_input(), m_input(), id=5), "request 'id' must be a string")
    rejects(json_request(x_input(), m_input(), parameters=[]), "'parameters' must be an object")
    rejects(
        json_request(x_input(), m_input(), parameters={"binary_data_output": 1}),
        "'binary_data_output' must be true or false",
    )
    rejects(
        json_request(x_input(), m_input(), parameters={"timeout": -5}),
        "'timeout' must be a non-negative integer",
    )


def test_rejects_input_that_is_not_an_object_with_a_name() -> None:
    rejects(json_request(5, m_input()), r"inputs\[0\] must be an object with a 'name'")  # type: ignore[arg-type]
    rejects(json_request(x_input(name=None), m_input()), r"inputs\[0\] must be an object")


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        (x_input(data=[1, 2, "3"]), "input 'x' expects FP32 'data' of numbers"),
        (x_input(data=[True, False, True]), "input 'x' expects FP32 'data' of numbers"),
        (x_input(data=[1, None, 3]), "input 'x' expects FP32 'data' of numbers"),
        (x_input(data=[[1, 2], [3]]), r"input 'x' 'data' must be a \(nested\) list of numbers"),
        (x_input(data=5), "input 'x' 'data' must be a list"),
        (m_input(data=[1.5]), "input 'm' expects INT64 'data': integers from"),
        (m_input(data=[2**63]), "input 'm' expects INT64 'data': integers from"),
        (m_input(data=[2**70]), "input 'm' expects INT64 'data': integers from"),
        (m_input(data=[True]), "input 'm' expects INT64 'data': integers from"),
    ],
    ids=[
        "string",
        "bools",
        "null",
        "ragged",
        "scalar",
        "fraction",
        "int64-overflow",
        "bigint",
        "bool-as-int",
    ],
)
def test_rejects_json_data_of_the_wrong_kind(entry: dict[str, Any], match: str) -> None:
    others = [x_input(), m_input()]
    inputs = [entry if e["name"] == entry["name"] else e for e in others]
    rejects(json_request(*inputs), match)


def test_json_integers_are_range_checked_per_datatype() -> None:
    for datatype, good, bad in [
        ("UINT8", [0, 255], [256]),
        ("INT8", [-128, 127], [-129]),
        ("UINT64", [0, 2**64 - 1], [-1]),
        ("UINT32", [2**32 - 1], [2**32]),
    ]:
        signature = identity_signature(datatype, (None,))
        ok = {"name": "x", "datatype": datatype, "shape": [len(good)], "data": good}
        assert decode_infer_request(json_request(ok), None, signature).inputs["x"].tolist() == good
        with pytest.raises(ProtocolError, match=f"input 'x' expects {datatype} 'data': integers"):
            decode_infer_request(json_request({**ok, "shape": [1], "data": bad}), None, signature)


def test_rejects_bool_data_that_is_not_true_or_false() -> None:
    signature = identity_signature("BOOL", (2,))
    entry = {"name": "x", "datatype": "BOOL", "shape": [2], "data": [1, 0]}
    with pytest.raises(ProtocolError, match="input 'x' expects BOOL 'data' of true and false"):
        decode_infer_request(json_request(entry), None, signature)
    body, header_length = binary_request((entry, b"\x01\x02"))
    with pytest.raises(ProtocolError, match="input 'x' BOOL data has bytes other than 0 and 1"):
        decode_infer_request(body, header_length, signature)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (struct.pack("<I", 1) + b"a", "input 'x' has 5 bytes of BYTES data, too few for 2"),
        (
            struct.pack("<I", 1) + b"a" + struct.pack("<I", 9) + b"abcd",
            "input 'x' BYTES element 1 claims 9 bytes but only 4 remain",
        ),
        (
            struct.pack("<I", 0) + struct.pack("<I", 0) + b"xyz",
            "input 'x' has 3 bytes of BYTES data after its 2 elements",
        ),
        (
            struct.pack("<I", 1) + b"\xff" + struct.pack("<I", 0),
            "input 'x' BYTES element 0 is not UTF-8",
        ),
        (struct.pack("<I", 5) + b"abcde\x00\x00", "input 'x' BYTES data ends after 1 of 2"),
    ],
    ids=["too-short", "overrun", "trailing", "not-utf8", "cut-length"],
)
def test_rejects_malformed_binary_bytes(data: bytes, match: str) -> None:
    entry = {"name": "x", "datatype": "BYTES", "shape": [2]}
    body, header_length = binary_request((entry, data))
    with pytest.raises(ProtocolError, match=match):
        decode_infer_request(body, header_length, identity_signature("BYTES", (2,)))


def test_rejects_json_bytes_that_are_not_strings() -> None:
    signature = identity_signature("BYTES", (2,))
    for data, match in [
        ([1, "a"], "must hold only strings"),
        (["\ud800", "a"], "not valid Unicode"),
        (["a"], "has 1 values in 'data' but shape"),
    ]:
        entry = {"name": "x", "datatype": "BYTES", "shape": [2], "data": data}
        with pytest.raises(ProtocolError, match=f"input 'x' .*{match}"):
            decode_infer_request(json_request(entry), None, signature)


def test_rejects_raw_binary_request_for_a_model_it_cannot_fit() -> None:
    with pytest.raises(ProtocolError, match="raw binary request"):
        decode_infer_request(bytes(24), 0, SIGNATURE)
    with pytest.raises(ProtocolError, match="input 'x' has 20 bytes of binary data"):
        decode_infer_request(bytes(20), 0, identity_signature("FP32", (2, 3)))


def test_rejects_model_input_of_a_type_v2_cannot_carry() -> None:
    signature = Signature((TensorSpec("c", dtype_from_numpy(np.complex64), (2,)),), ())
    entry = {"name": "c", "datatype": "FP32", "shape": [2], "data": [1, 2]}
    with pytest.raises(ProtocolError, match="input 'c' has ONNX type COMPLEX64"):
        decode_infer_request(json_request(entry), None, signature)


# -- nothing but ProtocolError -------------------------------------------------------------

FUZZ_SIGNATURE = Signature(
    (
        spec("x", "FP32", ("batch", 3)),
        spec("m", "INT64", ("batch",)),
        spec("s", "BYTES", (None,)),
        spec("b", "BOOL", (2,)),
        spec("h", "BF16", None),
    ),
    (spec("y", "FP32", ("batch", 3)), spec("z", "UINT8", None)),
)
VALID_BINARY = client_request(
    {
        "x": sample("FP32")[:1],
        "m": np.array([3]),
        "s": np.array(["a", "bc"], dtype=object),
        "b": np.array([True, False]),
        "h": np.ones((2, 2), ml_dtypes.bfloat16),
    },
    binary={"x": True, "m": False, "s": True, "b": True, "h": True},
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
names = st.sampled_from(["x", "m", "s", "b", "h", "y", "z", "other"]) | json_values
request_inputs = st.fixed_dictionaries(
    {"name": names},
    optional={
        "datatype": st.sampled_from([*DATATYPES, "fp32", "X"]) | json_values,
        "shape": st.lists(st.integers(-2, 4), max_size=3) | json_values,
        "data": st.lists(
            st.integers(-3, 3) | st.floats() | st.booleans() | st.text(max_size=2), max_size=8
        )
        | json_values,
        "parameters": st.fixed_dictionaries(
            {},
            optional={
                "binary_data_size": st.integers(-2, 40) | json_values,
                "shared_memory_region": st.text(max_size=2),
            },
        )
        | json_values,
    },
)
request_docs = st.fixed_dictionaries(
    {"inputs": st.lists(request_inputs, max_size=5) | json_values},
    optional={
        "id": st.text(max_size=4) | json_values,
        "parameters": st.dictionaries(
            st.sampled_from(["binary_data_output", "timeout", "k"]), json_values
        )
        | json_values,
        "outputs": st.lists(
            st.fixed_dictionaries(
                {"name": names},
                optional={
                    "parameters": st.dictionaries(
                        st.sampled_from(["binary_data", "classification"]), json_values
                    )
                },
            ),
            max_size=3,
        )
        | json_values,
    },
)


def decodes_or_rejects(body: bytes, header_length: int | None, allow_nonfinite: bool) -> None:
    try:
        request = decode_infer_request(
            body, header_length, FUZZ_SIGNATURE, allow_nonfinite=allow_nonfinite
        )
    except ProtocolError as e:
        message = str(e)
    else:
        message = ""
    if message:
        assert "\n" not in message
        return
    assert set(request.inputs) == set(FUZZ_SIGNATURE.input_names)
    for name, array in request.inputs.items():
        assert isinstance(array, np.ndarray)
        assert array.dtype == FUZZ_SIGNATURE.input(name).dtype.numpy


@settings(max_examples=150, deadline=None)
@given(body=st.binary(max_size=300), header_length=st.none() | st.integers(-2, 320))
def test_arbitrary_bytes_raise_only_protocol_errors(body: bytes, header_length: int | None) -> None:
    decodes_or_rejects(body, header_length, True)


@settings(max_examples=300, deadline=None)
@given(doc=request_docs | json_values, allow_nonfinite=st.booleans(), tail=st.binary(max_size=40))
def test_arbitrary_json_requests_raise_only_protocol_errors(
    doc: Any, allow_nonfinite: bool, tail: bytes
) -> None:
    header = json.dumps(doc).encode()
    decodes_or_rejects(header, None, allow_nonfinite)
    decodes_or_rejects(header + tail, len(header), allow_nonfinite)


VALID_JSON_DOC: dict[str, Any] = {
    "id": "r",
    "parameters": {"binary_data_output": False, "timeout": 10},
    "inputs": [
        {"name": "x", "datatype": "FP32", "shape": [2, 3], "data": [[1, 2, 3], [4, 5, 6.5]]},
        {"name": "m", "datatype": "INT64", "shape": [2], "data": [1, -1]},
        {"name": "s", "datatype": "BYTES", "shape": [1], "data": ["é"]},
        {"name": "b", "datatype": "BOOL", "shape": [2], "data": [True, False]},
        {"name": "h", "datatype": "BF16", "shape": [1, 1, 1], "data": [0.5]},
    ],
    "outputs": [{"name": "z", "parameters": {"binary_data": True}}],
}


def slots(value: Any) -> list[tuple[Any, Any]]:
    """Every (container, key or index) inside a JSON value, depth first."""
    found: list[tuple[Any, Any]] = []
    keys = value.keys() if isinstance(value, dict) else range(len(value))
    for key in keys:
        found.append((value, key))
        if isinstance(value[key], dict | list) and value[key]:
            found.extend(slots(value[key]))
    return found


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_mutated_json_requests_raise_only_protocol_errors(data: st.DataObject) -> None:
    doc = json.loads(json.dumps(VALID_JSON_DOC))
    for _ in range(data.draw(st.integers(0, 3))):
        container, key = data.draw(st.sampled_from(slots(doc)))
        if data.draw(st.booleans()):
            container[key] = data.draw(
                json_values | st.integers(-3, 2**65) | st.sampled_from(DATATYPES)
            )
        else:
            del container[key]
        if not slots(doc):
            break
    decodes_or_rejects(json.dumps(doc).encode(), None, data.draw(st.booleans()))


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_corrupted_binary_requests_raise_only_protocol_errors(data: st.DataObject) -> None:
    body, header_length = VALID_BINARY
    assert header_length is not None
    blob = bytearray(body)
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(blob) - 1))
        kind = data.draw(st.sampled_from(["flip", "drop", "truncate"]))
        if kind == "flip":
            blob[at] = data.draw(st.integers(0, 255))
        elif kind == "drop":
            del blob[at : at + data.draw(st.integers(1, 8))]
        else:
            del blob[at:]
        if not blob:
            break
    length = header_length + data.draw(st.integers(-3, 3))
    decodes_or_rejects(bytes(blob), length, data.draw(st.booleans()))


@settings(max_examples=150, deadline=None)
@given(
    body=st.binary(max_size=200) | st.builds(gzip.compress, st.binary(max_size=200)),
    encoding=st.sampled_from(["gzip", "deflate", "identity", None, "br"]),
)
def test_decompress_raises_only_protocol_errors(body: bytes, encoding: str | None) -> None:
    try:
        plain = decompress(body, encoding, limit=150)
    except ProtocolError as e:
        message = str(e)
    else:
        message = ""
        assert len(plain) <= 150
    assert "\n" not in message


def test_the_valid_fuzz_seed_decodes() -> None:
    request = decode_infer_request(*VALID_BINARY, FUZZ_SIGNATURE)
    assert request.inputs["s"].tolist() == ["a", "bc"]
    assert request.inputs["h"].dtype == ml_dtypes.bfloat16
    request = decode_infer_request(json.dumps(VALID_JSON_DOC).encode(), None, FUZZ_SIGNATURE)
    assert request.inputs["m"].tolist() == [1, -1]
    assert request.outputs == [RequestedOutput("z", True)]


# --- RequestDecoder: remembered binary layouts ------------------------------------------------


def _decoders(
    signature: Signature, monkeypatch: pytest.MonkeyPatch, **kw: Any
) -> tuple[RequestDecoder, list[int]]:
    """A decoder and a list that grows by one each time a JSON header is parsed."""
    parsed: list[int] = []
    real = protocol._parse_json

    def counting(data: bytes) -> Any:
        parsed.append(1)
        return real(data)

    monkeypatch.setattr(protocol, "_parse_json", counting)
    return RequestDecoder(signature, **kw), parsed


def _same_request(got: InferRequest, want: InferRequest) -> None:
    assert (got.id, got.outputs, got.parameters, got.binary_output) == (
        want.id,
        want.outputs,
        want.parameters,
        want.binary_output,
    )
    assert got.inputs.keys() == want.inputs.keys()
    for name in want.inputs:
        assert_same(got.inputs[name], want.inputs[name])


@pytest.mark.parametrize("datatype", [d for d in DATATYPES if d != "BYTES"])
def test_a_header_seen_before_is_not_parsed_again(
    datatype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    signature = identity_signature(datatype)
    decoder, parsed = _decoders(signature, monkeypatch)
    x = sample(datatype)
    outputs = [triton.InferRequestedOutput("y", binary_data=True)]
    first = client_request({"x": x}, outputs=outputs, request_id="r1", timeout=250)
    other = sample(datatype)[::-1].copy()  # same shape and header, other data
    second = client_request({"x": other}, outputs=outputs, request_id="r1", timeout=250)
    assert first[1] == second[1]
    got = [decoder.decode(*first), decoder.decode(*second), decoder.decode(*first)]
    assert len(parsed) == 1
    for request, body in zip(got, [first, second, first], strict=True):
        _same_request(request, decode_infer_request(*body, signature))
    assert got[1].parameters == {"timeout": 250} and got[1].id == "r1"


def test_remembered_layouts_still_check_the_data(monkeypatch: pytest.MonkeyPatch) -> None:
    decoder, parsed = _decoders(identity_signature("BOOL"), monkeypatch)
    body, length = client_request({"x": sample("BOOL")})
    decoder.decode(body, length)
    bad = body[:-1] + b"\x02"  # a BOOL byte other than 0 and 1
    with pytest.raises(ProtocolError, match="BOOL data has bytes other than 0 and 1"):
        decoder.decode(bad, length)
    with pytest.raises(ProtocolError, match="bytes of binary data that no input declares"):
        decoder.decode(body + b"\x00", length)  # not the remembered size: decoded in full
    assert len(parsed) == 2

    strict, parsed = _decoders(identity_signature("FP32"), monkeypatch, allow_nonfinite=False)
    x = sample("FP32")
    body, length = client_request({"x": x})
    strict.decode(body, length)
    x[1, 2] = np.nan
    with pytest.raises(ProtocolError, match="non-finite value"):
        strict.decode(*client_request({"x": x}))
    assert len(parsed) == 1


@pytest.mark.parametrize(
    ("arrays", "binary"),
    [
        ({"x": sample("BYTES")}, True),  # BYTES sizes depend on the data
        ({"x": sample("FP32")}, False),  # JSON data is part of the header
    ],
)
def test_requests_not_all_plain_binary_are_decoded_every_time(
    arrays: dict[str, np.ndarray], binary: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    datatype = "BYTES" if arrays["x"].dtype == object else "FP32"
    signature = identity_signature(datatype)
    decoder, parsed = _decoders(signature, monkeypatch)
    body, length = client_request(arrays, binary=binary)
    for _ in range(3):
        _same_request(decoder.decode(body, length), decode_infer_request(body, length, signature))
    assert len(parsed) == 6  # three by the decoder, three by the reference


def test_the_decoder_remembers_a_bounded_number_of_headers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoder, parsed = _decoders(identity_signature("FP32"), monkeypatch, size=2)
    bodies = [client_request({"x": np.zeros((rows, 3), np.float32)}) for rows in (1, 2, 3)]
    for body in [*bodies, bodies[2], bodies[0]]:
        decoder.decode(*body)
    # 1, 2, 3 parsed; 3 remembered; 1 was forgotten when 3 came in, so parsed again
    assert len(parsed) == 4


def test_remembered_layouts_do_not_keep_request_bodies_alive() -> None:
    import gc
    import weakref

    decoder = RequestDecoder(identity_signature("FP32"))
    body, length = client_request({"x": np.zeros((1000, 3), np.float32)})
    buffer = body_buffer(len(body), length)
    buffer[:] = body
    owner = weakref.ref(buffer.obj)  # the numpy array the request's inputs are views of
    request = decoder.decode(buffer, length)
    assert np.shares_memory(request.inputs["x"], np.asarray(buffer))  # decoded without a copy
    del buffer, request
    gc.collect()
    assert owner() is None
