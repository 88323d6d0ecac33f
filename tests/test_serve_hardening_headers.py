"""Request header blocks are capped in bytes and in count: past either cap the client gets 431
and the connection closes, before the server holds more than the cap; requests under the caps,
bodies and keep-alive connections are unaffected."""

from __future__ import annotations

import http.client
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from onnxferry.cli import main
from onnxferry.errors import UsageError
from onnxferry.serve.server import ServerOptions, running
from tests.helpers import RELU, onnx_text, save
from tests.serve_probes import address, raw, read_until_closed, request

STATM = Path("/proc/self/statm")
PAGE = 4096


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save(onnx_text(RELU), tmp_path_factory.mktemp("headers") / "m.onnx")


@pytest.fixture(scope="module")
def server(model: Path) -> Iterator[str]:
    """The defaults: 100 headers, 64 KiB."""
    with running(model, ServerOptions(port=0)) as url:
        yield url


@pytest.fixture(scope="module")
def small(model: Path) -> Iterator[str]:
    with running(model, ServerOptions(port=0, max_header_bytes=4096, max_headers=10)) as url:
        yield url


def head(lines: list[bytes]) -> bytes:
    return (
        b"GET /v2/health/ready HTTP/1.1\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n"
    )


class PeakRss:
    """The process's resident memory, sampled every millisecond while in the block (the
    server runs in a thread of this process)."""

    def __enter__(self) -> PeakRss:
        self.base = self.now()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    @staticmethod
    def now() -> int:
        return int(STATM.read_text().split()[1]) * PAGE

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, self.now())

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.base) / 2**20


def stream_headers(url: str, piece: bytes, most: int, seconds: float) -> tuple[bytes, int]:
    """Stream an endless header block in ``piece``s until the server answers or closes, or
    ``most`` bytes or ``seconds`` have gone by; returns (the answer, bytes sent)."""
    sent = 0
    end = time.monotonic() + seconds
    with socket.create_connection(address(url), timeout=10) as sock:
        sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n")
        while sent < most and time.monotonic() < end:
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
        return read_until_closed(sock), sent


@pytest.mark.skipif(not STATM.exists(), reason="reads resident memory from /proc")
@pytest.mark.parametrize(
    "piece",
    [b"x" * 65536, b"X-Filler: " + b"y" * 1000 + b"\r\n"],
    ids=["one endless header", "endless headers"],
)
def test_streamed_headers_get_431_at_once_and_memory_stays_flat(server: str, piece: bytes) -> None:
    if piece.startswith(b"X-"):
        piece *= 64
    else:
        piece = b"X-Big: " + piece
    idle = http.client.HTTPConnection(*address(server), timeout=30)
    idle.request("GET", "/v2/health/live")
    assert idle.getresponse().read() == b""
    started = time.monotonic()
    with PeakRss() as rss:
        answer, sent = stream_headers(server, piece, most=64 << 20, seconds=10)
    # unguarded, the server read all 64 MiB into memory and answered 408 ten seconds later
    assert answer.startswith(b"HTTP/1.1 431 "), (answer[:200], sent)
    assert b'"error"' in answer and b"connection: close" in answer.lower()
    assert time.monotonic() - started < 5 and sent < 16 << 20
    assert rss.growth_mib < 8, rss.growth_mib
    # the server still serves: on a new connection and on one opened before
    assert request(server, "GET", "/v2/health/ready") == (200, b"")
    idle.request("GET", "/v2/health/ready")
    assert idle.getresponse().status == 200
    idle.close()


def test_header_bytes_past_the_cap_are_431_for_an_ordinary_client(small: str) -> None:
    assert request(small, "GET", "/v2/health/ready", headers={"X-Pad": "p" * 3000})[0] == 200
    status, body = request(small, "GET", "/v2/health/ready", headers={"X-Pad": "p" * 5000})
    assert status == 431
    assert json.loads(body)["error"] == "request headers exceed 4096 bytes"
    # the server serves on
    status, body = request(small, "GET", "/v2/health/ready", headers={"X-Pad": "p" * 50})
    assert status == 200


def test_header_count_past_the_cap_is_431(small: str) -> None:
    ten = [b"Host: x", b"Connection: close"] + [b"X-%d: v" % i for i in range(8)]
    assert raw(small, head(ten)).startswith(b"HTTP/1.1 200 ")
    answer = raw(small, head([*ten, b"X-eleventh: v"]))
    assert answer.startswith(b"HTTP/1.1 431 ") and b"more than 10 request headers" in answer


def test_two_host_headers_are_400_and_the_server_serves_on(server: str) -> None:
    """RFC 9112 3.2: a request with more than one Host header is refused (which one names the
    target is ambiguous); one Host header, in any case, is fine."""
    one = [b"hOsT: x", b"Connection: close"]
    assert raw(server, head(one)).startswith(b"HTTP/1.1 200 ")
    for hosts in ([b"Host: x", b"Host: y"], [b"Host: x", b"host: x", b"HOST: x"]):
        answer = raw(server, head([*hosts, b"Connection: close"]))
        assert answer.startswith(b"HTTP/1.1 400 "), answer
        body = answer.split(b"\r\n\r\n", 1)[1]
        assert json.loads(body) == {"error": f"{len(hosts)} Host headers; send one"}
    assert request(server, "GET", "/v2/health/ready")[0] == 200


def test_a_missing_host_header_is_400_for_http_1_1_only(server: str) -> None:
    """RFC 9112 3.2: an HTTP/1.1 request without Host is refused and the connection closes;
    HTTP/1.0 requests may omit it."""
    answer = raw(server, head([b"Connection: close"]))
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    body = answer.split(b"\r\n\r\n", 1)[1]
    assert json.loads(body) == {
        "error": "the request has no Host header; HTTP/1.1 requests need one"
    }
    assert raw(server, b"GET /v2/health/ready HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 200 ")
    assert request(server, "GET", "/v2/health/ready")[0] == 200


def test_the_caps_apply_to_each_request_not_the_connection_or_the_body(small: str) -> None:
    conn = http.client.HTTPConnection(*address(small), timeout=30)
    try:
        for _ in range(4):  # 12 KB of headers over one keep-alive connection
            conn.request("GET", "/v2/health/ready", headers={"X-Pad": "p" * 3000})
            response = conn.getresponse()
            assert (response.status, response.read()) == (200, b"")
        x = {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1.0, -2.0, 3.0, -4.0]}
        body = json.dumps({"inputs": [x]}).encode() + b" " * (256 << 10)
        conn.request("POST", "/v2/models/m/infer", body=body)  # one send: head and body
        response = conn.getresponse()
        assert response.status == 200
        assert json.loads(response.read())["outputs"][0]["data"] == [1.0, 0.0, 3.0, 0.0]
    finally:
        conn.close()


def test_pipelined_requests_are_each_within_the_caps(small: str) -> None:
    one = head([b"Host: x", b"X-Pad: " + b"p" * 3000])
    answer = b""
    with socket.create_connection(address(small), timeout=10) as sock:
        sock.sendall(one * 3)  # 9 KB of headers in one send
        while answer.count(b"HTTP/1.1 ") < 3 and (chunk := sock.recv(65536)):
            answer += chunk
    assert answer.count(b"HTTP/1.1 200 ") == 3, answer


@pytest.mark.parametrize(
    ("options", "words"),
    [({"max_header_bytes": 0}, "max_header_bytes"), ({"max_headers": -1}, "max_headers")],
)
def test_caps_must_be_positive(options: dict[str, int], words: str) -> None:
    with pytest.raises(UsageError, match=words):
        ServerOptions(**options)  # type: ignore[arg-type]


def _refused(model: Path, capsys: pytest.CaptureFixture[str], option: str, value: str) -> str:
    """`ferry serve MODEL OPTION VALUE` on a port in use (a command that failed to refuse
    stops there, not serving): exit 2 and one line, returned."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = str(busy.getsockname()[1])
        assert main(["serve", str(model), "--port", port, option, value]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        *[
            (option, "0", f"{option} must be positive")
            for option in ("--max-header-bytes", "--max-headers", "--max-inflight")
        ],
        ("--max-parse-memory", "0", "--max-parse-memory must be positive"),
        # infinite MiB were an OverflowError turning them into bytes (an internal error)
        *[
            (option, "inf", f"{option} must be a finite number, got inf")
            for option in ("--max-body", "--max-response", "--max-inflight", "--max-parse-memory")
        ],
        ("--keep-alive", "inf", "--keep-alive must be a finite number"),
        ("--timeout-ms", "-1", "--timeout-ms must be positive, got -1"),  # served, with no deadline
        ("--timeout-ms", "nan", "--timeout-ms must be positive, got nan"),
        ("--poll", "inf", "--poll must be a finite number"),  # threading refuses an infinite wait
        ("--graceful-timeout", "inf", "--graceful-timeout must be a finite number"),  # Overflow
        ("--explain-timeout", "inf", "--explain-timeout must be a finite number"),
    ],
)
def test_cli_caps_sizes_and_timeouts_out_of_range_are_one_line(
    model: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, words: str
) -> None:
    assert words in _refused(model, capsys, option, value)


def test_settings_refuse_timeouts_that_are_not_positive_and_finite() -> None:
    from onnxferry.serve.settings import ServeSettings

    with pytest.raises(UsageError, match=r"ServeSettings.default_timeout_ms must be positive"):
        ServeSettings(default_timeout_ms=0)
    with pytest.raises(UsageError, match=r"ServeSettings.explain_timeout_s must be a finite"):
        ServeSettings(explain_timeout_s=float("inf"))
