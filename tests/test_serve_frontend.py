"""The HTTP front's response path: a response's head waits for its body and both go out in one
write (one send, one packet), and nothing that must go out alone waits: ``100 Continue``,
the head of a response without a body (HEAD), a head before the connection closes. Measured in
benchmarks/serve_frontend.py (with granian beside uvicorn, which ferry does not adopt:
RESULTS.md, serve_frontend)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton

from onnxferry.serve.connections import HeldHead
from onnxferry.serve.server import ServerOptions, running
from tests.helpers import RELU, onnx_text, save
from tests.test_serve_hardening_connections import address, read_until_closed, status


@dataclass
class Wire(asyncio.Transport):
    """A transport that records each write call (one entry per send the loop would make)."""

    sends: list[bytes] = field(default_factory=list)
    closed: bool = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.sends.append(bytes(data))

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self.sends.append(b"".join(list_of_data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


@dataclass
class Cycle:
    """What HeldHead reads and wraps of uvicorn's request-response cycle."""

    response_started: bool = False
    completions: int = 0

    def on_response(self) -> None:
        self.completions += 1


def test_the_head_waits_for_the_body_and_both_go_in_one_write() -> None:
    wire, cycle = Wire(), Cycle()
    held = HeldHead(wire, cycle)
    cycle.response_started = True
    held.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
    assert wire.sends == []
    held.write(b"hello")
    held.write(b" more")  # a later chunk goes straight through
    assert wire.sends == [b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", b" more"]


def test_writes_before_the_response_starts_go_at_once() -> None:
    wire, cycle = Wire(), Cycle()
    held = HeldHead(wire, cycle)
    held.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert wire.sends == [b"HTTP/1.1 100 Continue\r\n\r\n"]


def test_a_head_with_no_body_write_goes_out_on_completion_and_before_a_close() -> None:
    for end in ("on_response", "close"):
        wire, cycle = Wire(), Cycle(response_started=True)
        held = HeldHead(wire, cycle)
        held.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        getattr(cycle if end == "on_response" else held, end)()  # what uvicorn calls
        held.flush()  # nothing held twice
        assert wire.sends == [b"HTTP/1.1 204 No Content\r\n\r\n"]
        assert (wire.closed, cycle.completions) == (end == "close", int(end == "on_response"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    model = save(onnx_text(RELU), tmp_path_factory.mktemp("frontend") / "m.onnx")
    with running(model, ServerOptions(port=0)) as url:
        yield url


def infer_request() -> bytes:
    x = np.array([[-1.0, 2.0, -3.0, 4.0]], dtype=np.float32)
    item = triton.InferInput("x", [1, 4], "FP32").set_data_from_numpy(x, binary_data=True)
    body, length = triton.InferenceServerClient.generate_request_body(
        [item], outputs=[triton.InferRequestedOutput("y", binary_data=True)]
    )
    head = (
        "POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/octet-stream\r\n"
        f"Inference-Header-Content-Length: {length}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + bytes(body)


def read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """One whole response with a Content-Length: its head and body."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    size = int(next(ln for ln in lines if ln.startswith(b"content-length:")).split(b":")[1])
    while len(body) < size:
        body += sock.recv(65536)
    return head, body


def test_keep_alive_requests_get_whole_answers_one_after_another(server: str) -> None:
    with socket.create_connection(address(server), timeout=10) as sock:
        for _ in range(5):
            sock.sendall(infer_request())
            head, body = read_response(sock)
            assert status(head) == 200
            header_length = int(
                next(
                    ln.split(b":")[1]
                    for ln in head.lower().split(b"\r\n")
                    if ln.startswith(b"inference-header-content-length:")
                )
            )
            y = np.frombuffer(body[header_length:], dtype=np.float32)
            assert y.tolist() == [0.0, 2.0, 0.0, 4.0]


def test_a_head_request_gets_its_head_and_the_connection_serves_on(server: str) -> None:
    with socket.create_connection(address(server), timeout=10) as sock:
        sock.sendall(b"HEAD /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        assert status(data) in (200, 405) and data.endswith(b"\r\n\r\n")
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _ = read_response(sock)
        assert status(head) == 200


def test_pipelined_requests_after_a_head_request_all_get_their_answers(server: str) -> None:
    live = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(address(server), timeout=10) as sock:
        sock.sendall(b"HEAD /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n" + live + live)
        data = b""
        while data.count(b"HTTP/1.1 ") < 3:
            chunk = sock.recv(65536)
            assert chunk, f"closed after {data!r}"
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 2 and data.startswith(b"HTTP/1.1 405 ")


def test_100_continue_goes_out_before_the_body_is_sent(server: str) -> None:
    request = infer_request()
    head, _, body = request.partition(b"\r\n\r\n")
    with socket.create_connection(address(server), timeout=10) as sock:
        sock.sendall(head + b"\r\nExpect: 100-continue\r\n\r\n")
        interim = sock.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        answer, _ = read_response(sock)
        assert status(answer) == 200


def test_connection_close_gets_the_whole_answer_then_the_close(server: str) -> None:
    with socket.create_connection(address(server), timeout=10) as sock:
        sock.sendall(b"GET /v2/models/nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer, closed = read_until_closed(sock, 5)
    assert status(answer) == 404 and b'{"error"' in answer and closed is not None


def test_the_benchmark_model_is_shaped_like_the_ocr_classifier() -> None:
    import onnxruntime as ort

    sys_path = str(Path(__file__).resolve().parents[1] / "benchmarks")
    import sys

    sys.path.insert(0, sys_path)
    try:
        from serve_frontend import ocr_cnn
    finally:
        sys.path.remove(sys_path)
    proto = ocr_cnn()
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 3, 48, 192)).astype(np.float32)
    (y,) = session.run(None, {"x": x})
    assert y.shape == (2, 2) and np.allclose(y.sum(axis=1), 1.0, atol=1e-5)
