"""bench.remote, the load generator: `ferry bench --url` against the real `ferry serve` on a
loopback port.

The server runs as a subprocess (``ferry serve REPO --port P``, a two-model repository); the
tests that need it skip while ``onnxferry.serve.app`` is not importable. Sanity and structure
only, never timing.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from onnxferry.bench import LoadReport
from onnxferry.bench.remote import run_load_test, server_split, signature_from_metadata
from onnxferry.errors import FeedError, InputError, UsageError
from onnxferry.report import Report, render_table
from tests.helpers import free_port, mlp, onnx_text, save

SHORT = {"duration_s": 0.4, "warmup_s": 0.1, "timeout_s": 10.0}

# Runs only with 1 row (the server's warm-up): more make ONNX Runtime fail (HTTP 500).
PICKY = """
<ir_version: 10, opset_import: ["" : 21]>
picky (float[batch, 4] x) => (float[1, 4] y) <int64[2] shape = {1, 4}> { y = Reshape(x, shape) }
"""


def _ferry() -> str:
    beside = Path(sys.executable).with_name("ferry")
    found = str(beside) if beside.exists() else shutil.which("ferry")
    if found is None:
        pytest.skip("no `ferry` executable next to this interpreter or on PATH")
    return found


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=1) as r:
            return int(r.status) == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a `ferry serve` process serving a repository: tests.helpers.mlp() as "mlp" and
    PICKY as "picky"."""
    if importlib.util.find_spec("onnxferry.serve.app") is None:
        pytest.skip("onnxferry.serve.app does not exist yet, so there is no server to load")
    ferry = _ferry()
    repo = tmp_path_factory.mktemp("loadgen") / "repo"
    save(mlp(), repo / "mlp" / "1" / "model.onnx")
    save(onnx_text(PICKY), repo / "picky" / "1" / "model.onnx")
    port = free_port()
    log = repo.with_name("serve.log")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [ferry, "serve", str(repo), "--port", str(port)], stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not _ready(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ferry serve did not become ready: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- against the real server ------------------------------------------------------------


def test_levels_report_throughput_latency_and_the_server_split(server: str) -> None:
    report = run_load_test(server, "mlp", concurrency=(1, 4), **SHORT)
    assert report.ok, report.to_dict()
    assert [r.concurrency for r in report.rows] == [1, 4]
    assert report.inputs == {"x": {"datatype": "FP32", "shape": [1, 4]}}
    for row in report.rows:
        assert row.requests > 0 and row.errors == 0 and row.first_error is None
        assert row.p50_ms is not None and row.p90_ms is not None and row.p99_ms is not None
        assert 0 < row.p50_ms <= row.p90_ms <= row.p99_ms <= (row.max_ms or 0)
        duration = SHORT["duration_s"]
        assert row.requests / row.wall_s <= row.throughput_per_s <= row.requests / duration
        split = row.server
        assert split is not None, report.notes
        # The stats window brackets exactly the timed requests (nothing else hits the server).
        assert split.requests == row.requests
        assert split.queue_ms >= 0 and split.compute_ms > 0
        assert split.batch_size is not None and 1 <= split.batch_size <= 4
    table = report.table()
    assert len(table.rows) == 2 and len(table.rows[0]) == len(table.columns)
    assert "mlp" in render_table(table)
    data = json.loads(Report("bench", report).to_json())
    last = report.rows[1].server
    assert last is not None
    assert data["result"]["rows"][1]["server"]["batch_size"] == last.batch_size


def test_json_encoding_and_given_feeds(server: str) -> None:
    feeds = {"x": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)}
    report = run_load_test(server, "mlp", concurrency=[2], binary=False, feeds=feeds, **SHORT)
    assert report.ok and not report.binary
    assert report.inputs["x"]["shape"] == [3, 4]
    assert report.rows[0].requests > 0
    assert "JSON" in report.table().title


def test_feeds_that_do_not_fit_the_metadata_are_refused(server: str) -> None:
    with pytest.raises(FeedError, match="'wrong'"):
        run_load_test(server, "mlp", concurrency=[1], feeds={"wrong": np.ones((1, 4))}, **SHORT)
    with pytest.raises(FeedError, match="'x'"):
        run_load_test(server, "mlp", concurrency=[1], feeds={"x": np.ones((1, 5))}, **SHORT)


def test_failed_requests_are_counted_not_raised(server: str) -> None:
    feeds = {"x": np.ones((3, 4), dtype=np.float32)}
    report = run_load_test(server, "picky", concurrency=[2], feeds=feeds, **SHORT)
    row = report.rows[0]
    assert not report.ok
    assert row.requests == 0 and row.errors > 0 and row.p50_ms is None
    assert row.first_error is not None and row.first_error.startswith("HTTP 500")
    titles = [t.title for t in report.tables()]
    assert "First error per level" in titles


def test_an_unknown_model_is_one_line_input_error(server: str) -> None:
    with pytest.raises(InputError, match="has no model nope") as info:
        run_load_test(server, "nope", concurrency=[1], **SHORT)
    assert "\n" not in str(info.value)
    assert info.value.exit_code == 2


# --- without a server -------------------------------------------------------------------


def test_an_unreachable_server_is_one_line_input_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(InputError, match="cannot reach a V2 inference server") as info:
        run_load_test(url, "m", concurrency=[1], **SHORT)
    assert "\n" not in str(info.value) and url in str(info.value)
    assert "ferry serve" in str(info.value)


@pytest.mark.parametrize(
    ("url", "options", "match"),
    [
        ("http://127.0.0.1:1", {"concurrency": []}, "no concurrency level"),
        ("http://127.0.0.1:1", {"concurrency": [0]}, "positive integer"),
        ("http://127.0.0.1:1", {"concurrency": [1], "duration_s": 0}, "duration"),
        ("ftp://127.0.0.1:1", {"concurrency": [1]}, "cannot use server URL"),
    ],
)
def test_bad_options_are_usage_errors(url: str, options: dict[str, object], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        run_load_test(url, "m", **options)


def test_signature_from_metadata_maps_datatypes_and_dynamic_dims() -> None:
    sig = signature_from_metadata(
        {
            "inputs": [
                {"name": "ids", "datatype": "INT64", "shape": [-1, 7]},
                {"name": "text", "datatype": "BYTES", "shape": [1]},
            ],
            "outputs": [{"name": "y", "datatype": "FP16", "shape": [-1]}],
        }
    )
    assert [(s.name, s.dtype.onnx_name, s.shape) for s in sig.inputs] == [
        ("ids", "INT64", (None, 7)),
        ("text", "STRING", (1,)),
    ]
    assert sig.outputs[0].dtype.numpy == np.float16
    with pytest.raises(FeedError, match="unknown V2 datatype"):
        signature_from_metadata({"inputs": [{"name": "a", "datatype": "FP8", "shape": [1]}]})
    with pytest.raises(InputError, match="malformed"):
        signature_from_metadata({"inputs": [{"name": "a", "datatype": "FP32"}]})


# GET /v2/models/mlp/stats in the shape Triton 2.51 answers it (every field it sends), with
# round numbers; the test below makes the "after" answer: 40 more requests in 10 runs.
TRITON_BEFORE = {
    "model_stats": [
        {
            "name": "mlp",
            "version": "1",
            "last_inference": 1763712000000,
            "inference_count": 10,
            "execution_count": 10,
            "inference_stats": {
                "success": {"count": 10, "ns": 9000000},
                "fail": {"count": 0, "ns": 0},
                "queue": {"count": 10, "ns": 6000000},
                "compute_input": {"count": 10, "ns": 400000},
                "compute_infer": {"count": 10, "ns": 2000000},
                "compute_output": {"count": 10, "ns": 300000},
                "cache_hit": {"count": 0, "ns": 0},
                "cache_miss": {"count": 0, "ns": 0},
            },
            "response_stats": {},
            "batch_stats": [],
            "memory_usage": [],
        }
    ]
}


def test_server_split_is_the_per_request_difference() -> None:
    after = json.loads(json.dumps(TRITON_BEFORE))
    entry = after["model_stats"][0]
    entry["inference_count"] = 50
    entry["execution_count"] = 20  # 40 requests in 10 runs: batches of 4
    stats = entry["inference_stats"]
    stats["success"] = {"count": 50, "ns": 49000000}
    stats["queue"] = {"count": 50, "ns": 6000000 + 40 * 500000}
    stats["compute_input"] = {"count": 50, "ns": 400000 + 40 * 100000}
    stats["compute_infer"] = {"count": 50, "ns": 2000000 + 40 * 2000000}
    stats["compute_output"] = {"count": 50, "ns": 300000 + 40 * 50000}
    split = server_split(TRITON_BEFORE, after, "mlp")
    assert split is not None
    assert split.requests == 40 and split.executions == 10 and split.batch_size == 4
    assert split.queue_ms == pytest.approx(0.5)
    assert split.compute_ms == pytest.approx(0.1 + 2.0 + 0.05)
    # Another model's entries are ignored; no new request means no split.
    assert server_split(TRITON_BEFORE, after, "other") is None
    assert server_split(TRITON_BEFORE, TRITON_BEFORE, "mlp") is None


def test_an_empty_report_is_not_ok_and_still_renders() -> None:
    report = LoadReport("http://h:1", "m", "2", True, 1.0, 0.2, {})
    assert not report.ok
    assert report.table().title.startswith("Load test: m v2 at http://h:1")
    assert report.to_dict()["rows"] == []
