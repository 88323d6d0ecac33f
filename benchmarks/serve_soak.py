"""Soak `ferry serve`: valid traffic with 10 % malformed requests and attacks mixed in.

    .venv/bin/python benchmarks/serve_soak.py --quick                  # 30 s: answers only
    .venv/bin/python benchmarks/serve_soak.py                          # 300 s
    .venv/bin/python benchmarks/serve_soak.py --duration 600 --clients 4 --json build/soak.json

Issue 11's check: the real server (``.venv/bin/ferry serve REPO --port 0 --api-key-env
SOAK_KEY``, default limits) over a repository built here, REPO/soak/1/model.onnx
(x float32 [batch,16] -> MatMul -> y [batch,4], random weights) with a ferry.toml setting
``max_batch_size = 8``.

- Clients (``--clients`` threads, one keep-alive http.client connection each) send infer
  requests back to back: JSON, binary tensor data (Inference-Header-Content-Length, binary
  output) and gzip-compressed JSON, 1-8 rows. A valid one passes when it is answered 200 with
  its own id and y = x @ W (numpy). About 10 % are malformed: bad JSON, wrong datatype, wrong
  shape, unknown input, no key, wrong key, bad gzip, a binary header length past the body,
  unknown model, unknown route; each must be answered 4xx.
- One attack every ``--attack-interval`` seconds, in turn: a gzip body of 1.6 MiB of empty
  members, a gzip bomb (128 MiB of zeros), 200 KB of headers, 500 header fields, slowloris
  (a header line a second; the server's header timeout should end it, given 20 s), a stray
  body byte after a health answer (the keep-alive timeout should still close it), a batch
  past max_batch_size, a 3 MiB JSON body (valid: 200 with the right values), a 3 MiB JSON
  body of 20,000 rows (400), ``parameters.timeout`` = 10**400, a version segment of 5000
  digits, and a burst of 120 connections from 127.0.0.2 (the server admits 100 per address,
  the rest get its documented 503). Outcomes are statuses, or "closed" when the server closed
  without an answer. Slowloris and the stray byte run in threads of their own.
- The server's RSS (VmRSS of its process and every descendant) is sampled each second; the
  report gives it after warm-up (10 % of the run, at least one round of the attacks), at the
  end, the maximum, and the least-squares slope after warm-up, for the tree and for the
  server process alone, and of the minimum of each round of the attacks (their bodies make
  short peaks that all-sample slopes pick up). 30 s (``--quick``) is too short to judge
  memory by.

Exit status 1 when a valid request failed, anything was answered 5xx (but the burst's cap
503) or otherwise than expected (e.g. a malformed request answered 200, listed as
unexpected), the server logged a traceback, died, or did not exit 0 within 10 s of SIGTERM;
else 0.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import http.client
import itertools
import json
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from machine import cpu_summary, load_average

ROOT = Path(__file__).resolve().parents[1]
FERRY = ROOT / ".venv" / "bin" / "ferry"
MODEL = "soak"
FEATURES, OUTPUTS, MAX_BATCH = 16, 4, 8
MALFORMED_SHARE = 0.1
MIB = 1 << 20
KEEP_ALIVE_S = 5.0  # the server's defaults (ferry serve --help)
PER_CLIENT_CAP = 100
BURST = 120
SLOW_LIMIT_S = 20.0
SHUTDOWN_S = 10.0
KEEP_FAILURES = 10

Headers = dict[str, str]


# --- the model ---------------------------------------------------------------------------


def weights() -> np.ndarray:
    return np.random.default_rng(11).standard_normal((FEATURES, OUTPUTS)).astype(np.float32)


def build_repo(workdir: Path, w: np.ndarray) -> Path:
    """REPO/soak/1/model.onnx (x[batch,16] @ w -> y[batch,4]) and REPO/soak/ferry.toml."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        MODEL,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", OUTPUTS])],
        [numpy_helper.from_array(w, "w")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    onnx.checker.check_model(proto, full_check=True)
    repo = workdir / "repo"
    (repo / MODEL / "1").mkdir(parents=True)
    onnx.save(proto, repo / MODEL / "1" / "model.onnx")
    (repo / MODEL / "ferry.toml").write_text(f"max_batch_size = {MAX_BATCH}\n")
    return repo


# --- requests ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One request and what answers it rightly: a valid one carries ``x`` (200 and y = x @ W
    expected), a malformed one the statuses that are right for it."""

    kind: str
    method: str
    path: str
    body: bytes | None
    headers: Headers
    x: np.ndarray | None = None
    id: str = ""
    expect: frozenset[int] = frozenset({200})

    @property
    def valid(self) -> bool:
        return self.x is not None


INFER = f"/v2/models/{MODEL}/infer"


def tensor(x: np.ndarray, **overrides: Any) -> dict[str, Any]:
    described = {"name": "x", "datatype": "FP32", "shape": list(x.shape)}
    return {**described, "data": x.reshape(-1).tolist(), **overrides}


def json_body(x: np.ndarray, request_id: str = "", **overrides: Any) -> bytes:
    request: dict[str, Any] = {"inputs": [tensor(x, **overrides)]}
    if request_id:
        request["id"] = request_id
    return json.dumps(request).encode()


def binary_body(x: np.ndarray, request_id: str) -> tuple[bytes, int]:
    """Triton's binary tensor data: a JSON header, then x's bytes; y asked for in binary."""
    described = {"name": "x", "datatype": "FP32", "shape": list(x.shape)}
    header = {
        "id": request_id,
        "inputs": [{**described, "parameters": {"binary_data_size": x.nbytes}}],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
    }
    head = json.dumps(header).encode()
    return head + x.astype("<f4").tobytes(), len(head)


class Traffic:
    """Builds the clients' requests: valid ones of three kinds, and malformed ones."""

    KINDS = ("json", "binary", "gzip")
    SHARES = (0.5, 0.3, 0.2)

    def __init__(self, key: str) -> None:
        self.auth = {"Authorization": f"Bearer {key}"}
        self.malformed: dict[str, Callable[[np.ndarray], Request]] = {
            "bad_json": self._bad_json,
            "wrong_datatype": self._wrong_datatype,
            "wrong_shape": self._wrong_shape,
            "unknown_input": self._unknown_input,
            "no_key": self._no_key,
            "wrong_key": self._wrong_key,
            "bad_gzip": self._bad_gzip,
            "binary_length": self._binary_length,
            "unknown_model": self._unknown_model,
            "unknown_route": self._unknown_route,
        }

    def pick(self, rng: random.Random, request_id: str) -> Request:
        rows = rng.randint(1, MAX_BATCH)
        x = np.array([rng.uniform(-2, 2) for _ in range(rows * FEATURES)], np.float32)
        x = x.reshape(rows, FEATURES)
        if rng.random() < MALFORMED_SHARE:
            return rng.choice(list(self.malformed.values()))(x)
        return self.valid(rng.choices(self.KINDS, self.SHARES)[0], x, request_id)

    def valid(self, kind: str, x: np.ndarray, request_id: str) -> Request:
        headers = {**self.auth, "Content-Type": "application/json"}
        body = json_body(x, request_id)
        if kind == "binary":
            body, length = binary_body(x, request_id)
            headers = {**self.auth, "Inference-Header-Content-Length": str(length)}
        elif kind == "gzip":
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        return Request(kind, "POST", INFER, body, headers, x, request_id)

    def _bad(
        self,
        kind: str,
        body: bytes | None,
        status: int = 400,
        *,
        headers: Headers | None = None,
        path: str = INFER,
        method: str = "POST",
    ) -> Request:
        sent = {**self.auth, "Content-Type": "application/json"} if headers is None else headers
        return Request(kind, method, path, body, sent, expect=frozenset({status}))

    def _with(self, **extra: str) -> Headers:
        return {**self.auth, "Content-Type": "application/json", **extra}

    def _bad_json(self, x: np.ndarray) -> Request:
        return self._bad("bad_json", json_body(x)[:-7] + b",]}")

    def _wrong_datatype(self, x: np.ndarray) -> Request:
        return self._bad("wrong_datatype", json_body(x, datatype="INT32", data=[1] * x.size))

    def _wrong_shape(self, x: np.ndarray) -> Request:
        return self._bad("wrong_shape", json_body(x[:, :-1]))

    def _unknown_input(self, x: np.ndarray) -> Request:
        return self._bad("unknown_input", json_body(x, name="z"))

    def _no_key(self, x: np.ndarray) -> Request:
        return self._bad("no_key", json_body(x), 401, headers={"Content-Type": "application/json"})

    def _wrong_key(self, x: np.ndarray) -> Request:
        wrong = self._with(Authorization="Bearer " + "w" * 32)
        return self._bad("wrong_key", json_body(x), 401, headers=wrong)

    def _bad_gzip(self, x: np.ndarray) -> Request:
        body = gzip.compress(json_body(x))
        broken = body[:10] + bytes(b ^ 0x5A for b in body[10:30]) + body[30:]
        return self._bad("bad_gzip", broken, headers=self._with(**{"Content-Encoding": "gzip"}))

    def _binary_length(self, x: np.ndarray) -> Request:
        body, _ = binary_body(x, "")
        past = self._with(**{"Inference-Header-Content-Length": str(len(body) + 100)})
        return self._bad("binary_length", body, headers=past)

    def _unknown_model(self, x: np.ndarray) -> Request:
        return self._bad("unknown_model", json_body(x), 404, path="/v2/models/nope/infer")

    def _unknown_route(self, x: np.ndarray) -> Request:
        path = f"/v2/models/{MODEL}/explode"
        return self._bad("unknown_route", None, 404, path=path, method="GET")


# --- answers -----------------------------------------------------------------------------


def output_of(headers: Headers, body: bytes) -> tuple[str | None, np.ndarray]:
    """(id, y) from an infer response, JSON or binary."""
    length = headers.get("inference-header-content-length")
    if length is None:
        answer = json.loads(body)
        out = answer["outputs"][0]
        data = np.asarray(out["data"], np.float32)
    else:
        answer = json.loads(body[: int(length)])
        out = answer["outputs"][0]
        size = int(out["parameters"]["binary_data_size"])
        data = np.frombuffer(body[int(length) : int(length) + size], "<f4")
    return answer.get("id"), data.reshape(out["shape"])


def check_valid(
    request: Request, w: np.ndarray, status: int, headers: Headers, body: bytes
) -> str | None:
    """None when the answer is right; else why not."""
    if status != 200:
        return f"{request.kind}: HTTP {status}: {body[:200]!r}"
    assert request.x is not None
    try:
        answer_id, y = output_of(headers, body)
    except (ValueError, KeyError, TypeError, IndexError) as e:
        return f"{request.kind}: unreadable answer ({type(e).__name__}: {e})"
    if request.id and answer_id != request.id:
        return f"{request.kind}: id {answer_id!r} for request {request.id!r}"
    want = request.x @ w
    if y.shape != want.shape or not np.allclose(y, want, rtol=1e-4, atol=1e-5):
        return f"{request.kind}: wrong values (shape {y.shape}, want {want.shape})"
    return None


# --- the tally ---------------------------------------------------------------------------


@dataclass
class AttackStats:
    sent: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    seconds: list[float] = field(default_factory=list)


@dataclass
class Tally:
    """Everything counted, from any thread (under ``lock``)."""

    valid_sent: int = 0
    valid_ok: int = 0
    valid_kinds: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    failed: int = 0
    malformed_sent: int = 0
    malformed: dict[str, Counter[str]] = field(default_factory=dict)
    server_errors: int = 0
    errors_5xx: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    unexpected_count: int = 0
    attacks: dict[str, AttackStats] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def valid(self, kind: str, status: int | None, problem: str | None) -> None:
        with self.lock:
            self.valid_sent += 1
            self.valid_kinds[kind] += 1
            if problem is None:
                self.valid_ok += 1
                return
            self.failed += 1
            _keep(self.failures, problem)
            if status is not None and status >= 500:
                self.server_errors += 1
                _keep(self.errors_5xx, problem)

    def malformed_answer(self, request: Request, outcome: str) -> None:
        with self.lock:
            self.malformed_sent += 1
            self.malformed.setdefault(request.kind, Counter())[outcome] += 1
            self._judge(request.kind, outcome, {str(s) for s in request.expect})

    def attack(
        self, name: str, outcome: str, detail: str, seconds: float, expect: set[str]
    ) -> None:
        with self.lock:
            stats = self.attacks.setdefault(name, AttackStats())
            stats.sent += 1
            stats.outcomes[outcome] += 1
            stats.seconds.append(seconds)
            self._judge(name, outcome, expect, detail)

    def _judge(self, kind: str, outcome: str, expect: set[str], detail: str = "") -> None:
        if outcome in expect:
            return
        text = f"{kind}: {outcome}" + (f" ({detail})" if detail else "")
        if outcome.startswith("5") or outcome == "bad values":
            self.server_errors += 1
            _keep(self.errors_5xx, text)
        else:
            self.unexpected_count += 1
            _keep(self.unexpected, text)


def _keep(items: list[str], text: str) -> None:
    if len(items) < KEEP_FAILURES:
        items.append(text)


# --- clients -----------------------------------------------------------------------------


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def exchange(conn: http.client.HTTPConnection, request: Request) -> tuple[int, Headers, bytes]:
    conn.request(request.method, request.path, body=request.body, headers=request.headers)
    response = conn.getresponse()
    body = response.read()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


def client(
    url: str, traffic: Traffic, w: np.ndarray, tally: Tally, stop: threading.Event, seed: int
) -> None:
    """Requests back to back on one keep-alive connection (reopened only after the server
    said Connection: close, or failed)."""
    rng = random.Random(seed)
    conn = http.client.HTTPConnection(*address(url), timeout=60)
    previous = "none"
    for n in itertools.count():
        if stop.is_set():
            break
        request = traffic.pick(rng, f"c{seed}-{n}")
        try:
            status, headers, body = exchange(conn, request)
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            why = f"{request.kind}: no answer ({type(e).__name__}: {e}; after {previous})"
            record(tally, w, request, None, {}, b"", why)
        else:
            record(tally, w, request, status, headers, body)
        previous = request.kind
    conn.close()


def record(
    tally: Tally,
    w: np.ndarray,
    request: Request,
    status: int | None,
    headers: Headers,
    body: bytes,
    why: str = "",
) -> None:
    if request.valid:
        problem = why or check_valid(request, w, status or 0, headers, body)
        tally.valid(request.kind, status, problem)
    else:
        tally.malformed_answer(request, "closed" if status is None else str(status))


# --- attacks -----------------------------------------------------------------------------


def status_of(answer: bytes) -> str:
    match = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
    return match[1].decode() if match else "closed"


def read_until_closed(sock: socket.socket, seconds: float) -> tuple[bytes, float | None]:
    """What arrives until the server closes (and after how long), or until ``seconds``."""
    start = time.monotonic()
    chunks: list[bytes] = []
    while (left := seconds - (time.monotonic() - start)) > 0:
        sock.settimeout(min(left, 1.0))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            chunk = b""
        if not chunk:
            return b"".join(chunks), time.monotonic() - start
        chunks.append(chunk)
    return b"".join(chunks), None


def raw(addr: tuple[str, int], data: bytes, seconds: float = 15.0) -> tuple[str, str]:
    """Send ``data`` on a fresh socket; the status of what comes back before it closes."""
    with socket.create_connection(addr, timeout=seconds) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(data)
        answer, closed = read_until_closed(sock, seconds)
    return status_of(answer), "" if closed is not None else f"open after {seconds:g} s"


def once(url: str, request: Request, w: np.ndarray | None = None) -> tuple[str, str]:
    """One request on a connection of its own: (status or "closed", detail)."""
    conn = http.client.HTTPConnection(*address(url), timeout=60)
    try:
        status, headers, body = exchange(conn, request)
    except (OSError, http.client.HTTPException) as e:
        return "closed", f"{type(e).__name__}: {e}"
    finally:
        conn.close()
    problem = check_valid(request, w, status, headers, body) if w is not None else None
    if status == 200 and problem:
        return "bad values", problem
    return str(status), "" if status < 500 else body[:200].decode(errors="replace")


def slowloris(addr: tuple[str, int]) -> tuple[str, str]:
    """A header line a second until the server answers or closes (at most SLOW_LIMIT_S)."""
    start = time.monotonic()
    with socket.create_connection(addr, timeout=5) as sock:
        sock.sendall(f"POST {INFER} HTTP/1.1\r\nHost: soak\r\n".encode())
        for n in range(int(SLOW_LIMIT_S)):
            answer, closed = read_until_closed(sock, 1.0)
            if answer or closed is not None:
                return status_of(answer), f"after {time.monotonic() - start:.1f} s"
            try:
                sock.sendall(b"X-Slow-%d: 1\r\n" % n)
            except OSError:
                return "closed", f"after {time.monotonic() - start:.1f} s"
    return "open", f"still open after {SLOW_LIMIT_S:g} s"


def stray_byte(addr: tuple[str, int]) -> tuple[str, str]:
    """A body byte after a health answer on a keep-alive connection: the keep-alive timeout
    should still close it."""
    with socket.create_connection(addr, timeout=5) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: soak\r\nContent-Length: 10\r\n\r\n")
        first = status_of(sock.recv(65536))
        if first != "200":
            return first, "the health request itself"
        sock.sendall(b"x")
        answer, closed = read_until_closed(sock, KEEP_ALIVE_S + 5)
    if closed is None:
        return "open", f"still open after {KEEP_ALIVE_S + 5:g} s"
    if closed > KEEP_ALIVE_S + 2:
        return "closed late", f"after {closed:.1f} s"
    return "closed" if not answer else status_of(answer), f"after {closed:.1f} s"


def burst(addr: tuple[str, int], source: str, count: int) -> tuple[str, str]:
    """``count`` connections at once from ``source``, a health request on each."""
    socks: list[socket.socket] = []
    statuses: Counter[str] = Counter()
    try:
        for _ in range(count):
            sock = socket.socket()
            socks.append(sock)
            sock.settimeout(10)
            sock.bind((source, 0))
            sock.connect(addr)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: soak\r\n\r\n")
        for sock in socks:
            try:
                statuses[status_of(sock.recv(65536))] += 1
            except OSError:
                statuses["closed"] += 1
    finally:
        for sock in socks:
            sock.close()
    return burst_outcome(statuses), ""


def burst_outcome(statuses: Counter[str]) -> str:
    return " ".join(f"{status}x{n}" for status, n in sorted(statuses.items()))


def loopback_source() -> tuple[str, int]:
    """127.0.0.2 and a burst past the per-address cap; where it cannot be bound, 127.0.0.1
    and a burst well under the cap (the clients share that address)."""
    try:
        with socket.socket() as sock:
            sock.bind(("127.0.0.2", 0))
    except OSError:
        return "127.0.0.1", PER_CLIENT_CAP // 3
    return "127.0.0.2", BURST


@dataclass(frozen=True)
class Attack:
    name: str
    run: Callable[[], tuple[str, str]]
    expect: frozenset[str] = frozenset({"400"})
    background: bool = False


def gzip_bomb(inflated: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(MIB)
    return b"".join(packer.compress(zeros) for _ in range(inflated // MIB)) + packer.flush()


def padded_json(x: np.ndarray, size: int) -> bytes:
    body = json_body(x, "padded")
    return body[:-1] + b" " * (size - len(body)) + b"}"


def attacks(url: str, traffic: Traffic, w: np.ndarray) -> list[Attack]:
    """The attacks, in the order they are run; bodies built once."""
    addr = address(url)
    x = np.ones((2, FEATURES), np.float32)

    def post(body: bytes, path: str = INFER, **headers: str) -> Callable[[], tuple[str, str]]:
        sent = {**traffic.auth, "Content-Type": "application/json", **headers}
        request = Request("attack", "POST", path, body, sent)
        return lambda: once(url, request)

    def sock(data: str) -> Callable[[], tuple[str, str]]:
        return lambda: raw(addr, data.encode())

    gz = {"Content-Encoding": "gzip"}
    empty = gzip.compress(b"", mtime=0)
    health = "GET /v2/health/live HTTP/1.1\r\nHost: soak\r\n"
    fields = "".join(f"X-Field-{i}: {i}\r\n" for i in range(500))
    over = json_body(np.ones((MAX_BATCH + 1, FEATURES), np.float32))
    auth = {**traffic.auth, "Content-Type": "application/json"}
    large = Request("attack", "POST", INFER, padded_json(x, 3 * MIB), auth, x, "padded")
    rows = json_body(np.full((20_000, FEATURES), 0.123456, np.float32))
    forever = json_body(x)[:-1] + b', "parameters": {"timeout": 1' + b"0" * 400 + b"}}"
    digits = f"/v2/models/{MODEL}/versions/{'9' * 5000}/infer"
    source, count = loopback_source()
    cap = f"200x{min(count, PER_CLIENT_CAP)}"
    cap += f" 503x{count - PER_CLIENT_CAP}" if count > PER_CLIENT_CAP else ""
    closes = frozenset({"431", "closed"})
    return [
        Attack("gzip_members_1.6MiB", post(empty * (int(1.6 * MIB) // len(empty)), **gz)),
        Attack("gzip_bomb_128MiB", post(gzip_bomb(128 * MIB), **gz), frozenset({"413"})),
        Attack("headers_200KB", sock(f"{health}X-Big: {'a' * 200_000}\r\n\r\n"), closes),
        Attack("headers_500_fields", sock(f"{health}{fields}\r\n"), closes),
        Attack("slowloris", lambda: slowloris(addr), frozenset({"408", "closed"}), True),
        Attack("stray_body_byte", lambda: stray_byte(addr), frozenset({"closed"}), True),
        Attack("batch_over_max", post(over)),
        Attack("json_3MiB_valid", lambda: once(url, large, w), frozenset({"200"})),
        Attack("json_3MiB_20k_rows", post(rows)),
        Attack("timeout_1e400", post(forever)),
        Attack("version_5000_digits", post(json_body(x), digits), frozenset({"404"})),
        Attack(f"burst_{count}_conns", lambda: burst(addr, source, count), frozenset({cap})),
    ]


def run_attack(attack: Attack, tally: Tally) -> None:
    start = time.monotonic()
    try:
        outcome, detail = attack.run()
    except OSError as e:
        outcome, detail = "closed", f"{type(e).__name__}: {e}"
    tally.attack(attack.name, outcome, detail, time.monotonic() - start, set(attack.expect))


def attacker(plan: list[Attack], tally: Tally, stop: threading.Event, interval: float) -> None:
    """One attack every ``interval`` seconds, in turn; slow ones in threads of their own (one
    of each at a time), waited for at the end."""
    running: dict[str, threading.Thread] = {}
    for n in itertools.count():
        if stop.wait(interval):
            break
        attack = plan[n % len(plan)]
        if not attack.background:
            run_attack(attack, tally)
            continue
        if attack.name in running and running[attack.name].is_alive():
            continue
        thread = threading.Thread(target=run_attack, args=(attack, tally), daemon=True)
        thread.start()
        running[attack.name] = thread
    for thread in running.values():
        thread.join(SLOW_LIMIT_S + 10)


# --- the server and its memory -----------------------------------------------------------


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path


@contextlib.contextmanager
def serving(repo: Path, key: str, log: Path, timeout: float = 120) -> Iterator[Server]:
    """``ferry serve REPO --port 0 --api-key-env SOAK_KEY``; its port from its log line."""
    env = {**os.environ, "SOAK_KEY": key}
    cmd = [str(FERRY), "serve", str(repo), "--port", "0", "--api-key-env", "SOAK_KEY"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield Server(proc, wait_ready(proc, log, timeout), log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_ready(proc: subprocess.Popen[bytes], log: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    url = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"ferry serve exited with {proc.returncode}:\n{log.read_text()}")
        found = re.search(r"listening on (http://[\d.]+:\d+)", log.read_text(errors="replace"))
        url = found[1] if found else ""
        if url and health(url) == "200":
            return url
        time.sleep(0.2)
    raise SystemExit(f"ferry serve not ready after {timeout:g} s:\n{log.read_text()}")


def health(url: str) -> str:
    return once(url, Request("health", "GET", "/v2/health/ready", None, {}))[0]


def stop_server(proc: subprocess.Popen[bytes]) -> tuple[int | None, float]:
    """SIGTERM; (exit status, seconds), or (None, seconds) when killed after SHUTDOWN_S."""
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code: int | None = proc.wait(SHUTDOWN_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        code = None
    return code, time.monotonic() - start


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo.extend(children.get(tree[-1], []))
    return tree


def rss_kib(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"^VmRSS:\s+(\d+) kB", text, re.MULTILINE)
    return int(found[1]) if found else 0


@dataclass
class Memory:
    samples: list[tuple[float, float, float, int]] = field(default_factory=list)
    """(seconds since the start, RSS MiB of the process tree, of the server process alone,
    processes in the tree)."""
    died: bool = False


def sample_memory(
    proc: subprocess.Popen[bytes], memory: Memory, stop: threading.Event, start: float
) -> None:
    while not stop.wait(1.0):
        if proc.poll() is not None:
            memory.died = True
            return
        tree = process_tree(proc.pid)
        rss = [rss_kib(pid) / 1024 for pid in tree]
        memory.samples.append((time.monotonic() - start, sum(rss), rss[0], len(tree)))


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares MiB per minute through (seconds, MiB) points."""
    minutes = np.array([t for t, _ in points]) / 60
    return float(np.polyfit(minutes, np.array([rss for _, rss in points]), 1)[0])


def window_minima(points: list[tuple[float, float]], window: float) -> list[tuple[float, float]]:
    """The lowest point of each ``window`` seconds: the baseline under transient peaks. A last
    window less than half full is left out."""
    start, span = points[0][0], points[-1][0] - points[0][0]
    full = int(span // window) + (span % window >= window / 2)
    windows: dict[int, tuple[float, float]] = {}
    for t, rss in points:
        key = int((t - start) // window)
        if key < full and (key not in windows or rss < windows[key][1]):
            windows[key] = (t, rss)
    return list(windows.values())


def memory_figures(memory: Memory, warmup: float, window: float, until: float) -> dict[str, Any]:
    """RSS after warm-up, at the end, the maximum, and slopes after warm-up (MiB/min): of all
    samples, of the server process alone, and of each ``window``'s minimum (one round of
    the attacks, whose bodies make short peaks); samples up to ``until`` seconds (the end
    of the traffic)."""
    samples = [sample for sample in memory.samples if sample[0] <= until]
    after = [sample for sample in samples if sample[0] >= warmup]
    if len(after) < 2:
        return {"samples": len(samples)}
    tree = [(t, rss) for t, rss, _, _ in after]
    minima = window_minima(tree, window)
    late = minima[len(minima) // 2 :]
    return {
        "samples": len(samples),
        "warmup_s": round(after[0][0], 1),
        "rss_after_warmup_mib": round(after[0][1], 1),
        "rss_end_mib": round(after[-1][1], 1),
        "rss_max_mib": round(max(sample[1] for sample in samples), 1),
        "slope_mib_per_min": round(slope(tree), 3),
        "window_s": round(window, 1),
        "window_minimum_slope_mib_per_min": round(slope(minima), 3) if len(minima) > 1 else None,
        "late_window_minimum_slope_mib_per_min": round(slope(late), 3) if len(late) > 1 else None,
        "window_minima_mib": [
            round(rss, 1) for _, rss in window_minima([(s[0], s[1]) for s in samples], window)
        ],
        "server_process_end_mib": round(after[-1][2], 1),
        "server_process_slope_mib_per_min": round(slope([(t, m) for t, _, m, _ in after]), 3),
        "max_processes": max(sample[3] for sample in samples),
        "series": [[round(t, 1), round(rss, 1), round(m, 1), n] for t, rss, m, n in samples],
    }


# --- the run -----------------------------------------------------------------------------


@dataclass
class Report:
    date: str
    machine: str
    load_average: str = ""
    duration_s: float = 0.0
    clients: int = 0
    attack_interval_s: float = 0.0
    tally: Tally = field(default_factory=Tally)
    requests_per_s: float = 0.0
    memory: dict[str, Any] = field(default_factory=dict)
    server_died: bool = False
    health_after: str = ""
    shutdown_code: int | None = None
    shutdown_s: float = 0.0
    log_tracebacks: int = 0
    log_errors: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (
            self.tally.failed == 0
            and self.tally.server_errors == 0
            and self.tally.unexpected_count == 0
            and self.log_tracebacks == 0
            and not self.server_died
            and self.health_after == "200"
            and self.shutdown_code == 0
        )


def soak(server: Server, w: np.ndarray, key: str, args: argparse.Namespace) -> Report:
    """Clients, attacker and memory sampler for ``args.duration`` seconds; then the checks
    after it and SIGTERM."""
    report = Report(datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), cpu_summary())
    report.duration_s, report.clients = args.duration, args.clients
    report.attack_interval_s = args.attack_interval
    traffic = Traffic(key)
    plan = attacks(server.url, traffic, w)
    for attack in plan:  # reported in this order
        report.tally.attacks[attack.name] = AttackStats()
    warmup = args.warmup
    if warmup is None:  # 10 % of the run, at least one round of every attack
        warmup = max(0.1 * args.duration, len(plan) * args.attack_interval)
    memory = Memory()
    elapsed = run_threads(server, traffic, w, plan, report.tally, memory, args)
    tally = report.tally
    report.requests_per_s = (tally.valid_sent + tally.malformed_sent) / elapsed
    window = len(plan) * args.attack_interval
    report.memory = memory_figures(memory, warmup, window, until=elapsed)
    report.server_died = memory.died or server.proc.poll() is not None
    report.health_after = "dead" if report.server_died else health(server.url)
    report.load_average = load_average()
    if not report.server_died:
        report.shutdown_code, report.shutdown_s = stop_server(server.proc)
    read_log(report, server.log)
    return report


def run_threads(
    server: Server,
    traffic: Traffic,
    w: np.ndarray,
    plan: list[Attack],
    tally: Tally,
    memory: Memory,
    args: argparse.Namespace,
) -> float:
    """Run the soak; the seconds the clients ran (slow attacks still going then finish)."""
    stop, stop_memory = threading.Event(), threading.Event()
    start = time.monotonic()
    sampler = threading.Thread(target=sample_memory, args=(server.proc, memory, stop_memory, start))
    attack = threading.Thread(target=attacker, args=(plan, tally, stop, args.attack_interval))
    clients = [
        threading.Thread(target=client, args=(server.url, traffic, w, tally, stop, i))
        for i in range(args.clients)
    ]
    for thread in (sampler, attack, *clients):
        thread.start()
    stop.wait(args.duration)
    stop.set()
    for thread in clients:
        thread.join()
    elapsed = time.monotonic() - start
    attack.join()
    stop_memory.set()
    sampler.join()
    return elapsed


def read_log(report: Report, log: Path) -> None:
    lines = log.read_text(errors="replace").splitlines()
    report.log_tracebacks = sum("Traceback" in line for line in lines)
    errors = [ln for ln in lines if re.search(r"error|exception", ln, re.IGNORECASE)]
    report.log_errors = errors[:KEEP_FAILURES]


# --- printing ----------------------------------------------------------------------------


def counts(counter: Counter[str]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(counter.items())) or "-"


def render(report: Report) -> str:
    t, m = report.tally, report.memory
    statuses: Counter[str] = sum(t.malformed.values(), Counter())
    lines = [
        f"serve soak: {report.duration_s:g} s, {report.clients} client threads, "
        f"{MALFORMED_SHARE:.0%} malformed, an attack every {report.attack_interval_s:g} s",
        f"date: {report.date}",
        f"machine: {report.machine}",
        f"load average (1/5/15 min, at the end): {report.load_average}",
        f"valid requests: {t.valid_sent} sent, {t.valid_ok} ok, {t.failed} failed "
        f"({counts(t.valid_kinds)})",
        *(f"  failure: {f}" for f in t.failures),
        f"malformed requests: {t.malformed_sent} sent; statuses {counts(statuses)}",
        *(f"  {kind:<16} {counts(c)}" for kind, c in sorted(t.malformed.items())),
        f"attacks: {sum(a.sent for a in t.attacks.values())} sent",
        *(attack_line(name, a) for name, a in t.attacks.items()),
        f"5xx / server errors: {t.server_errors}",
        *(f"  {e}" for e in t.errors_5xx),
        f"unexpected outcomes (not 5xx): {t.unexpected_count}",
        *(f"  {u}" for u in t.unexpected),
        f"throughput: {report.requests_per_s:.0f} requests/s (valid + malformed, clients only)",
        render_memory(m),
        f"server log: {report.log_tracebacks} tracebacks, {len(report.log_errors)} error lines",
        *(f"  {line[:200]}" for line in report.log_errors),
        f"health after the soak: {report.health_after}; shutdown: "
        + (
            "server died during the soak"
            if report.server_died
            else f"SIGTERM -> exit {report.shutdown_code} in {report.shutdown_s:.1f} s"
        ),
        f"result: {'PASS' if report.passed else 'FAIL'}",
        "",
        "Markdown for benchmarks/RESULTS.md:",
        "",
        *markdown(report),
    ]
    return "\n".join(lines)


def attack_line(name: str, stats: AttackStats) -> str:
    slowest = max(stats.seconds, default=0.0)
    return f"  {name:<22} {stats.sent:>4}  {counts(stats.outcomes)}  (longest {slowest:.1f} s)"


def render_memory(m: dict[str, Any]) -> str:
    if "slope_mib_per_min" not in m:
        return f"server RSS: too few samples ({m.get('samples', 0)})"
    return (
        f"server RSS (process tree, up to {m['max_processes']} processes; {m['samples']} "
        f"samples, one a second): after warm-up ({m['warmup_s']:g} s) "
        f"{m['rss_after_warmup_mib']} MiB, end {m['rss_end_mib']} MiB, max "
        f"{m['rss_max_mib']} MiB\n"
        f"  slope after warm-up: {signed(m['slope_mib_per_min'])} MiB/min; of each "
        f"{m['window_s']:g} s window's minimum: {signed(m['window_minimum_slope_mib_per_min'])}"
        f" MiB/min, over the later half of those windows: "
        f"{signed(m['late_window_minimum_slope_mib_per_min'])} MiB/min\n"
        f"  each {m['window_s']:g} s window's minimum from the start (MiB): "
        f"{' '.join(f'{v:g}' for v in m['window_minima_mib'])}\n"
        f"  the server process alone: end {m['server_process_end_mib']} MiB, slope after "
        f"warm-up {signed(m['server_process_slope_mib_per_min'])} MiB/min"
    )


def signed(value: float | None) -> str:
    return "-" if value is None else f"{round(value, 3) or 0.0:+.3f}"  # never -0.000


def markdown(report: Report) -> list[str]:
    t, m = report.tally, report.memory
    statuses: Counter[str] = sum(t.malformed.values(), Counter())
    rss = (
        f"{m['rss_after_warmup_mib']} / {m['rss_end_mib']} / {m['rss_max_mib']} MiB"
        if "rss_end_mib" in m
        else "-"
    )
    slopes = (
        f"{signed(m.get('slope_mib_per_min'))} / "
        f"{signed(m.get('window_minimum_slope_mib_per_min'))} / "
        f"{signed(m.get('late_window_minimum_slope_mib_per_min'))} MiB/min"
    )
    rows = [
        ("date", report.date),
        ("machine", report.machine),
        ("duration, client threads", f"{report.duration_s:g} s, {report.clients}"),
        ("requests/s (valid + malformed)", f"{report.requests_per_s:.0f}"),
        ("valid requests: sent / ok / failed", f"{t.valid_sent} / {t.valid_ok} / {t.failed}"),
        ("malformed requests: sent (statuses)", f"{t.malformed_sent} ({counts(statuses)})"),
        ("attacks: sent", str(sum(a.sent for a in t.attacks.values()))),
        ("5xx / unexpected outcomes", f"{t.server_errors} / {t.unexpected_count}"),
        ("server RSS after warm-up / end / max", rss),
        ("RSS slope after warm-up: all samples / window minima / their later half", slopes),
        ("SIGTERM", f"exit {report.shutdown_code} in {report.shutdown_s:.1f} s"),
        ("result", "PASS" if report.passed else "FAIL"),
    ]
    table = ["| soak | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    table += ["", "| attack | sent | outcomes |", "|---|---|---|"]
    table += [f"| {n} | {a.sent} | {counts(a.outcomes)} |" for n, a in t.attacks.items()]
    return table


def to_json(report: Report) -> dict[str, Any]:
    data = {f.name: getattr(report, f.name) for f in fields(report) if f.name != "tally"}
    tally = {k: v for k, v in vars(report.tally).items() if k not in ("lock", "attacks")}
    tally["attacks"] = {  # asdict would turn a Counter into counts of its (key, value) pairs
        name: {"sent": a.sent, "outcomes": dict(a.outcomes), "seconds": a.seconds}
        for name, a in report.tally.attacks.items()
    }
    return {**data, "tally": tally, "passed": report.passed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds (default 300)")
    parser.add_argument("--quick", action="store_true", help="30 s")
    parser.add_argument("--clients", type=int, default=4, help="client threads (default 4)")
    parser.add_argument("--attack-interval", type=float, default=1.5, help="seconds")
    parser.add_argument(
        "--warmup",
        type=float,
        help="seconds before the memory figures start (default: 10 %% of the run, at least "
        "one round of the attacks)",
    )
    parser.add_argument("--json", type=Path, help="write the report as JSON here")
    parser.add_argument("--log", type=Path, help="keep the server's log here")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration = 30.0
    key = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="serve-soak-") as tmp:
        w = weights()
        repo = build_repo(Path(tmp), w)
        log = args.log or Path(tmp) / "server.log"
        with serving(repo, key, log) as server:
            report = soak(server, w, key, args)
    print(render(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(to_json(report), indent=2, default=str) + "\n")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
