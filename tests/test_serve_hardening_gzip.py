"""Compressed request bodies against the real server on loopback: gzip members cost time
linear in the body and are capped, and a large body inflates off the event loop so that
health checks keep answering meanwhile."""

from __future__ import annotations

import gzip
import itertools
import json
import time
import zlib
from collections.abc import Iterator

import pytest

from onnxferry.serve.app import ServeSettings
from onnxferry.serve.config import ModelConfig
from onnxferry.serve.inflate import MAX_GZIP_MEMBERS
from onnxferry.serve.server import ServerOptions, running
from tests.helpers import onnx_text, save
from tests.serve_probes import connection, kept_answering_while

MIB = 1 << 20
LIMIT = 128 * MIB
SHAPE = """
<ir_version: 10, opset_import: ["" : 21]>
shape (uint8[n] x) => (int64[1] y) { y = Shape(x) }
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One model, ``shape``: y = the length of x (uint8[n]); nothing to compute, so the time
    of a request is the time of its body."""
    path = save(onnx_text(SHAPE), tmp_path_factory.mktemp("gzip") / "shape.onnx")
    config = ModelConfig(max_batch_size=0, instances=1, intra_op_threads=1)
    settings = ServeSettings(body_limit=LIMIT, body_timeout_s=30.0)
    with running(path, ServerOptions(port=0), settings, config) as url:
        yield url


def post_gzip(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = connection(url)
    try:
        conn.request(
            "POST",
            "/v2/models/shape/infer",
            body=body,
            headers={"Content-Encoding": "gzip", **(headers or {})},
        )
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def binary_request(size: int) -> tuple[bytes, int]:
    """An infer body with ``size`` zero bytes for x, and the length of its JSON header."""
    tensor = {"name": "x", "datatype": "UINT8", "shape": [size]}
    inputs = [{**tensor, "parameters": {"binary_data_size": size}}]
    header = json.dumps({"inputs": inputs}).encode()
    return header + bytes(size), len(header)


def json_request(size: int) -> bytes:
    x = {"name": "x", "datatype": "UINT8", "shape": [size], "data": [1] * size}
    return json.dumps({"inputs": [x]}).encode()


def length_of(data: bytes) -> int:
    outputs = json.loads(data)["outputs"]
    return int(outputs[0]["data"][0])


def test_many_empty_members_are_refused_fast(server: str) -> None:
    body = gzip.compress(b"") * (120 * 1024)  # 2.4 MiB of 20-byte members
    started = time.monotonic()
    status, data = post_gzip(server, body)
    elapsed = time.monotonic() - started
    assert status == 400, data
    assert f"more than {MAX_GZIP_MEMBERS} members" in json.loads(data)["error"]
    assert elapsed < 1.0, f"{elapsed:.2f} s"


def test_members_up_to_the_cap_are_one_body(server: str) -> None:
    plain = json_request(200)
    cut = [len(plain) * i // MAX_GZIP_MEMBERS for i in range(MAX_GZIP_MEMBERS + 1)]
    pieces = [plain[a:b] for a, b in itertools.pairwise(cut)]
    status, data = post_gzip(server, b"".join(gzip.compress(p) for p in pieces))
    assert status == 200, data
    assert length_of(data) == 200

    status, data = post_gzip(server, b"".join(gzip.compress(p) for p in [*pieces, b" "]))
    assert status == 400
    assert f"more than {MAX_GZIP_MEMBERS} members" in json.loads(data)["error"]


def test_a_bomb_inflated_off_the_loop_is_413(server: str) -> None:
    bomb = gzip.compress(bytes(LIMIT + MIB), compresslevel=9)
    assert len(bomb) < MIB
    status, data = post_gzip(server, bomb)
    assert status == 413, data
    assert "inflates past" in json.loads(data)["error"]
    status, data = post_gzip(server, gzip.compress(json_request(3)))  # still serving
    assert (status, length_of(data)) == (200, 3)


def test_health_answers_while_a_large_body_inflates(server: str) -> None:
    size = LIMIT - MIB
    plain, header_length = binary_request(size)
    body = gzip.compress(plain, compresslevel=1)  # ~0.3 MiB that inflates slowly
    started = time.monotonic()
    assert len(zlib.decompress(body, wbits=31)) == len(plain)
    inflate_s = time.monotonic() - started  # what the server spends inflating it
    del plain

    headers = {"Inference-Header-Content-Length": str(header_length)}
    answer = kept_answering_while(
        server, lambda: post_gzip(server, body, headers), inflate_s, quick=0.1
    )
    assert answer and answer[0][0] == 200, answer
    assert length_of(answer[0][1]) == size


def test_a_body_header_given_twice_with_different_values_is_refused(server: str) -> None:
    """Content-Type, Content-Encoding and Inference-Header-Content-Length say how to read the
    body: two different values of one (the app took the last, a proxy in front may have read
    the first) are a 400 naming it; the same value twice reads as one, and the server serves
    on. (Two Content-Length headers are httptools' to refuse, and are.)"""
    body, header_length = binary_request(16)
    cases = {
        "inference-header-content-length": [str(header_length), str(header_length - 3)],
        "content-type": ["application/json", "application/octet-stream"],
        "content-encoding": ["identity", "gzip"],
    }
    for name, values in cases.items():
        for given, status in ((values, 400), ([values[0], values[0]], 200)):
            conn = connection(server)
            try:
                conn.putrequest("POST", "/v2/models/shape/infer")
                conn.putheader("Content-Length", str(len(body)))
                if name != "inference-header-content-length":
                    conn.putheader("Inference-Header-Content-Length", str(header_length))
                for value in given:
                    conn.putheader(name, value)
                conn.endheaders(body)
                response = conn.getresponse()
                answer = response.read()
            finally:
                conn.close()
            assert response.status == status, (name, given, answer)
            if status == 400:
                assert f"the request has 2 different {name} headers; send one".encode() in answer
            else:
                assert length_of(answer) == 16
