"""Every connection has a deadline and their number is capped: stray bytes after a response
cannot hold a connection past the keep-alive timeout, a response the client does not read is
dropped, connections past the total or per-client cap get 503 and close while other clients
are served, and requests still running past the graceful timeout get a JSON 503."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from onnxferry.errors import UsageError
from onnxferry.serve.server import ServerOptions, running
from tests.helpers import RELU, onnx_text, save

KEEP_ALIVE_S = 0.5


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save(onnx_text(RELU), tmp_path_factory.mktemp("connections") / "m.onnx")


@pytest.fixture(scope="module")
def server(model: Path) -> Iterator[str]:
    options = ServerOptions(port=0, keep_alive_s=KEEP_ALIVE_S, write_timeout_s=1.0)
    with running(model, options) as url:
        yield url


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def connect(url: str, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(address(url), timeout=10, source_address=(source, 0))


def read_until_closed(sock: socket.socket, seconds: float) -> tuple[bytes, float | None]:
    """What the server sends within ``seconds``, and when it closed (None: still open)."""
    started = time.monotonic()
    chunks: list[bytes] = []
    while (left := started + seconds - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return b"".join(chunks), time.monotonic() - started
        if not chunk:
            return b"".join(chunks), time.monotonic() - started
        chunks.append(chunk)
    return b"".join(chunks), None


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def health(sock: socket.socket) -> bytes:
    sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    return sock.recv(65536)


def test_a_stray_byte_after_the_response_does_not_hold_the_connection(server: str) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        assert status(sock.recv(65536)) == 200
        sock.sendall(b"x")
        # unguarded, the byte cancelled the keep-alive timer and the connection stayed open
        answer, closed = read_until_closed(sock, KEEP_ALIVE_S + 3)
    assert answer == b"" and closed is not None and closed < KEEP_ALIVE_S + 1.5


def test_trickled_stray_bytes_do_not_extend_the_keep_alive(server: str) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        assert status(sock.recv(65536)) == 200
        started = time.monotonic()
        closed = None
        for _ in range(40):  # a byte every 0.1 s, for at most 4 s
            try:
                sock.sendall(b"x")
            except (BrokenPipeError, ConnectionResetError):
                break
            if read_until_closed(sock, 0.1)[1] is not None:
                break
        closed = time.monotonic() - started
    assert closed < KEEP_ALIVE_S + 1.5


def test_keep_alive_connections_still_serve_one_request_after_another(server: str) -> None:
    with connect(server) as sock:
        for _ in range(3):
            assert status(health(sock)) == 200
            time.sleep(KEEP_ALIVE_S / 3)
        answer, closed = read_until_closed(sock, KEEP_ALIVE_S + 3)
    assert answer == b"" and closed is not None


def test_a_response_the_client_does_not_read_is_dropped(server: str) -> None:
    count = 400
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    with sock:
        sock.settimeout(10)
        sock.connect(address(server))
        sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * count)
        time.sleep(2.5)  # past the write timeout while nothing is read
        answer, closed = read_until_closed(sock, 10)
    # unguarded, the server waited for the client for ever and the client got every response
    assert closed is not None and 0 < answer.count(b"HTTP/1.1 200 ") < count


def test_connections_past_the_total_cap_get_503_and_others_are_served(model: Path) -> None:
    with running(model, ServerOptions(port=0, max_connections=3)) as url:
        held = [connect(url) for _ in range(3)]
        try:
            assert status(health(held[0])) == 200
            with connect(url) as extra:
                answer, closed = read_until_closed(extra, 5)
            assert status(answer) == 503 and closed is not None
            head, body = answer.split(b"\r\n\r\n", 1)
            assert b"connection: close" in head.lower()
            assert "connections" in json.loads(body)["error"]
            held.pop().close()
            assert status(retry_health(url)) == 200
        finally:
            for sock in held:
                sock.close()


def test_a_client_at_its_cap_does_not_lock_out_another(model: Path) -> None:
    with running(model, ServerOptions(port=0, max_connections_per_client=2)) as url:
        held = [connect(url) for _ in range(2)]
        try:
            with connect(url) as extra:
                answer, closed = read_until_closed(extra, 5)
            assert status(answer) == 503 and closed is not None
            assert "127.0.0.1" not in answer.decode()  # the address is not echoed
            with connect(url, "127.0.0.2") as other:
                assert status(health(other)) == 200
            assert status(health(held[1])) == 200
        finally:
            for sock in held:
                sock.close()


def retry_health(url: str) -> bytes:
    """GET /v2/health/live on a new connection; retried for up to 5 s while the server has
    not yet seen a closed connection go."""
    answer = b""
    for _ in range(50):
        with connect(url) as sock:
            answer = health(sock)
        if status(answer) == 200:
            break
        time.sleep(0.1)
    return answer


@pytest.mark.parametrize(
    "options", [{"max_connections": 0}, {"max_connections_per_client": -1}, {"write_timeout_s": 0}]
)
def test_connection_options_must_be_positive(options: dict[str, int]) -> None:
    with pytest.raises(UsageError, match=next(iter(options))):
        ServerOptions(**options)  # type: ignore[arg-type]


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_requests_past_the_graceful_timeout_get_a_json_503(model: Path) -> None:
    records = Records()
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "onnxferry")]
    try:
        with running(model, ServerOptions(port=0, graceful_timeout_s=1)) as url:
            for logger in loggers:  # uvicorn sets up its loggers as it starts
                logger.addHandler(records)
            sock = connect(url)
            # half a body: the request is still reading it when the server stops
            sock.sendall(
                b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
            )
            time.sleep(0.2)
        with sock:
            answer, closed = read_until_closed(sock, 5)
    finally:
        for logger in loggers:
            logger.removeHandler(records)
    assert status(answer) == 503 and closed is not None, answer
    head, body = answer.split(b"\r\n\r\n", 1)
    assert b"application/json" in head.lower() and b"connection: close" in head.lower()
    assert json.loads(body) == {"error": "the server is shutting down"}
    errors = [r for r in records.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and not any(r.exc_info for r in records.records), errors


class ClosingWatch(Records):
    closed = False

    def close(self) -> None:
        self.closed = True
        super().close()


def test_serving_leaves_the_process_s_logging_alone(model: Path) -> None:
    """uvicorn's own logging config closed every handler in the process as a server started:
    TensorFlow's absl handler on the stderr pytest had swapped in, and pytest's capture then
    failed on the closed file ("I/O operation on closed file", sys.stderr lost)."""
    root, watch = logging.getLogger(), ClosingWatch()
    root.addHandler(watch)
    try:
        with running(model, ServerOptions(port=0)) as url, connect(url) as sock:
            assert status(health(sock)) == 200
        assert not watch.closed and watch in root.handlers
    finally:
        root.removeHandler(watch)
