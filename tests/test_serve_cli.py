"""`ferry serve` as a user runs it: a real process, SIGTERM drains in-flight work and exits 0;
bad paths and busy ports are one line and exit 2; `ferry bench --url` load-tests it."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from onnxferry.cli import main
from tests.helpers import free_port, wait_ready
from tests.test_serve_app import affine, infer_json, slow, write

FERRY = Path(sys.executable).with_name("ferry")


def _post(port: int, path: str, body: bytes, timeout: float = 60) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=body)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@pytest.fixture
def slow_server(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    model = write(tmp_path / "slow.onnx", slow())
    port = free_port()
    process = subprocess.Popen(
        [str(FERRY), "serve", str(model), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_ready(port, process)
        yield port, process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


def test_sigterm_finishes_in_flight_requests_and_exits_0(
    slow_server: tuple[int, subprocess.Popen[bytes]],
) -> None:
    port, process = slow_server
    x = {"name": "x", "datatype": "FP32", "shape": [384, 384], "data": [0.5] * 384 * 384}
    body = infer_json([x])
    statuses: list[int] = []
    requests = [
        threading.Thread(target=lambda: statuses.append(_post(port, "/v2/models/slow/infer", body)))
        for _ in range(3)
    ]
    for r in requests:
        r.start()
    time.sleep(0.3)  # the requests are in the server (reading, queued or running)
    process.send_signal(signal.SIGTERM)
    for r in requests:
        r.join(60)
    assert process.wait(60) == 0
    assert statuses == [200, 200, 200]
    with pytest.raises(ConnectionRefusedError):
        _post(port, "/v2/models/slow/infer", body, timeout=2)


def test_serve_bad_path_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", str(tmp_path / "missing.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing.onnx" in err and len(err.splitlines()) == 1


def test_serve_on_a_busy_port_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = write(tmp_path / "m.onnx", affine())
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert main(["serve", str(model), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"cannot listen on 127.0.0.1:{port}" in err and len(err.splitlines()) == 1


def test_bench_url_load_tests_a_running_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from onnxferry.serve.server import running

    model = write(tmp_path / "m.onnx", affine())
    with running(model) as url:
        code = main(["bench", "--url", url, "--model", "m", "--concurrency", "1,4",
                     "--duration", "0.5", "--json"])  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report
    rows = report["result"]["rows"]
    assert [r["concurrency"] for r in rows] == [1, 4]
    assert all(r["requests"] > 0 and r["errors"] == 0 and r["p50_ms"] > 0 for r in rows)


def test_bench_url_needs_a_model_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--url", "http://127.0.0.1:1"]) == 2
    assert "--model" in capsys.readouterr().err


def test_serve_without_the_serve_extra_says_what_to_install(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a)
    )
    model = write(tmp_path / "m.onnx", affine())
    assert main(["serve", str(model)]) == 2
    assert "pip install 'onnxferry[serve]'" in capsys.readouterr().err


def test_serve_model_options_are_checked_like_ferry_toml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = write(tmp_path / "m.onnx", affine())
    assert main(["serve", str(model), "--inline-max-ms", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "inline_max_ms must be >= 0" in err and len(err.splitlines()) == 1


def _catches_sigterm(pid: int) -> bool:
    """Whether the process has installed a SIGTERM handler (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_sigterm_while_starting_up_exits_0(tmp_path: Path) -> None:
    """SIGTERM as soon as `ferry serve` can take it (while it imports and loads the model)
    stops it cleanly: exit 0, no traceback."""
    model = write(tmp_path / "slow.onnx", slow())
    process = subprocess.Popen(
        [str(FERRY), "serve", str(model), "--port", str(free_port())],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        end = time.monotonic() + 60
        while not _catches_sigterm(process.pid):
            assert process.poll() is None and time.monotonic() < end
            time.sleep(0.001)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err.decode()
    assert b"stopped by SIGTERM before it started serving" in err
    assert b"Traceback" not in err


_SIGTERM_NOW = """
import contextlib, os, signal, sys, time
from onnxferry.cli.serve import _sigterm_ends_startup

def sigterm_now():  # this process gets SIGTERM; its handler runs at the next bytecode
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)
    raise AssertionError("SIGTERM's handler did not run")
"""


def _fresh_python(code: str, *args: object) -> subprocess.CompletedProcess[str]:
    """``code`` after ``_SIGTERM_NOW`` in a new interpreter: a signal sent to a test worker
    that has run other files (threads of native libraries, handlers they installed) could
    reach a handler other than the one under test and end the worker."""
    return subprocess.run(
        [sys.executable, "-c", _SIGTERM_NOW + code, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_sigterm_an_extension_turns_into_its_own_error_still_ends_the_start_up() -> None:
    """pybind11 reports an exception raised while its module initializes as "ImportError:
    initialization failed" (ONNX Runtime's import did, in CI): still a clean stop."""
    done = _fresh_python(
        """
with _sigterm_ends_startup() as stopped:
    try:
        sigterm_now()
    except BaseException as e:
        raise ImportError("initialization failed") from e
assert stopped is not None and stopped.is_set()
"""
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "ferry serve: stopped by SIGTERM before it started serving\n"


def test_a_sigterm_a_library_swallowed_stops_the_server_as_it_takes_over(tmp_path: Path) -> None:
    """An exception raised in a weakref callback is dropped (importlib's module locks have one):
    the start-up goes on, and the server returns at once instead of serving for ever."""
    model = write(tmp_path / "m.onnx", affine())
    done = _fresh_python(
        """
from onnxferry.serve.server import ServerOptions, serve
with _sigterm_ends_startup() as stopped:
    with contextlib.suppress(BaseException):
        sigterm_now()
    start = time.monotonic()
    assert serve(sys.argv[1], ServerOptions(port=0), stopped=stopped) == 0
    assert time.monotonic() - start < 10
""",
        model,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.endswith("ferry serve: stopped by SIGTERM before it started serving\n")
