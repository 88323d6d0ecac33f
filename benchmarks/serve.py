"""`ferry serve` against raw ONNX Runtime, Triton (pytriton) and a plain FastAPI server.

    bash benchmarks/setup_bench_env.sh                 # once: /work/bench-venv + /work/pa
    .venv/bin/python benchmarks/serve.py --quick       # about 3 minutes
    .venv/bin/python benchmarks/serve.py --json build/serve-bench.json

Same machine, same models, the same ONNX Runtime thread budget everywhere (``--threads``,
default: the cores this process may use), concurrency 1, 8 and 32, on two models built here
with random weights: a small CNN (x[batch,3,224,224] -> 2 strided Conv+Relu -> pool -> Gemm)
and a 3-layer MLP (x[batch,256] -> 512 -> 512 -> 10).

- raw ORT: ``session.run`` in this process at batch 1..32 (onnxferry.bench); the best
  samples/s, and the bare batch-1 p50 the latency target compares against.
- ferry: ``.venv/bin/ferry serve REPO --port P`` (one model per repo, ``ferry.toml`` with
  ``max_batch_size``, ``max_queue_delay_ms`` and instances x threads = the budget).
- triton: Triton Inference Server through nvidia-pytriton, dynamic batching with the same
  max batch and queue delay, one instance running one ORT session with the budget's threads
  (benchmarks/serve_backends.py, run by the benchmark venv's interpreter).
- fastapi: FastAPI + uvicorn, one request = one ``session.run`` (serve_backends.py).
- floor: the HTTP stack ferry serves on (uvicorn + httptools + uvloop) answering with zeros
  without running the model (serve_backends.py, this interpreter): the least any server on
  that stack can cost, client included. Not a competitor; it shows which part of a gap is
  the HTTP stack and which part is ferry.

Load: Triton's perf_analyzer (C++; ``--perf-analyzer DIR`` as setup_bench_env.sh makes it)
over HTTP with binary tensors, batch 1 per request; it
needs ``GET /v2/models/{m}/config``, which the FastAPI server lacks, so FastAPI is measured
with onnxferry's load generator (onnxferry.bench.remote) and the table says which client
measured each row. The load generator (Python, aiohttp) costs more CPU per request than
perf_analyzer, and client and server share the cores, so it reads lower on small models; the
servers perf_analyzer measures get load-generator rows too (``--no-cross-check`` skips them)
and server-vs-server ratios use rows of the same client. Targets (issue 5): at concurrency 8
ferry >= 1.5x Triton's throughput and >= 0.9x raw ORT at the batch size ferry formed; at
concurrency 1 ferry's p50 at most 0.3 ms above the bare ``session.run`` p50.

With perf_analyzer, ferry and the floor are also measured at concurrency 8 with requests that
carry the batch raw ORT was fastest at (``--request-batch``), and compared with raw ORT at
that batch: the other reading of "0.9x raw ONNX Runtime at the same batch size".
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxferry.bench import bench
from onnxferry.report import Table, render_table
from onnxferry.runtime import usable_cores
from onnxferry.serve.config import ModelConfig

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = Path(__file__).resolve().with_name("serve_backends.py")
LEVELS = (1, 8, 32)
RAW_BATCHES = (1, 2, 4, 8, 16, 32)
SYSTEMS = ("ferry", "triton", "fastapi", "floor")
BATCHED_SYSTEMS = ("ferry", "floor")  # also measured with requests of the raw best batch
TARGET_VS_TRITON = 1.5
TARGET_VS_RAW = 0.9
TARGET_P50_OVER_RAW_MS = 0.3


# --- models ------------------------------------------------------------------------------


def _weights(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
    scale = 1.0 / np.sqrt(np.prod(shape[1:]) if len(shape) > 1 else shape[0])
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def _model(
    name: str,
    nodes: list[onnx.NodeProto],
    x: list[Any],
    y: list[Any],
    inits: list[onnx.TensorProto],
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y)],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def cnn() -> onnx.ModelProto:
    """x[batch,3,224,224] -> Conv 3->16 s2 -> Relu -> Conv 16->32 s2 -> Relu -> GAP -> Gemm."""
    rng = np.random.default_rng(0)
    inits = [_weights(rng, "w1", (16, 3, 3, 3)), _weights(rng, "b1", (16,))]
    inits += [_weights(rng, "w2", (32, 16, 3, 3)), _weights(rng, "b2", (32,))]
    inits += [_weights(rng, "w3", (32, 10)), _weights(rng, "b3", (10,))]
    conv: dict[str, Any] = {"strides": [2, 2], "pads": [1, 1, 1, 1]}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], **conv),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], **conv),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"]),
    ]
    return _model("cnn", nodes, ["batch", 3, 224, 224], ["batch", 10], inits)


def mlp() -> onnx.ModelProto:
    """x[batch,256] -> Gemm 512 -> Relu -> Gemm 512 -> Relu -> Gemm 10."""
    rng = np.random.default_rng(1)
    sizes = [(256, 512), (512, 512), (512, 10)]
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    h = "x"
    for i, (n_in, n_out) in enumerate(sizes, 1):
        inits += [_weights(rng, f"w{i}", (n_in, n_out)), _weights(rng, f"b{i}", (n_out,))]
        out = "y" if i == len(sizes) else f"g{i}"
        nodes.append(helper.make_node("Gemm", [h, f"w{i}", f"b{i}"], [out]))
        if out != "y":
            nodes.append(helper.make_node("Relu", [out], [f"h{i}"]))
            h = f"h{i}"
    return _model("mlp", nodes, ["batch", 256], ["batch", 10], inits)


MODELS: dict[str, Callable[[], onnx.ModelProto]] = {"cnn": cnn, "mlp": mlp}


# --- results -----------------------------------------------------------------------------


@dataclass
class Row:
    """One system at one concurrency level (per-request figures, batch 1 per request)."""

    system: str
    client: str
    concurrency: int
    throughput: float | None = None  # inferences (= samples) per second
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    server_queue_ms: float | None = None
    server_compute_ms: float | None = None
    server_batch: float | None = None
    error: str | None = None
    request_batch: int = 1  # rows per request


@dataclass
class RawRow:
    batch: int
    p50_ms: float
    p99_ms: float
    runs_per_s: float
    samples_per_s: float


@dataclass
class ModelResult:
    model: str
    raw: list[RawRow] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    load_average: float | None = None  # 1-minute, when the model's runs ended


# --- CPU pinning -------------------------------------------------------------------------


@dataclass(frozen=True)
class Pinning:
    """Cores for the server side (servers, raw ORT) and the client side (load), or None."""

    server: tuple[int, ...] | None = None
    client: tuple[int, ...] | None = None


def plan_pinning(threads: int, mode: str) -> Pinning:
    """ "auto" pins when there are at least 2 cores beyond the thread budget (and taskset)."""
    cpus = sorted(os.sched_getaffinity(0))
    enough = len(cpus) >= threads + (2 if mode == "auto" else 1)
    if mode == "off" or not enough or shutil.which("taskset") is None:
        if mode == "on":
            raise SystemExit(f"--pin on needs taskset and more than {threads} usable cores")
        return Pinning()
    return Pinning(tuple(cpus[:threads]), tuple(cpus[threads:]))


def pins_text(pin: Pinning) -> str:
    """Where the server and the client run, for a benchmark's settings line."""
    if not pin.server:
        return "not pinned: servers and client share the cores"
    return f"server side on cores {list(pin.server)}, clients on {list(pin.client or ())}"


def taskset(cpus: tuple[int, ...] | None, cmd: list[str]) -> list[str]:
    return cmd if cpus is None else ["taskset", "-c", ",".join(map(str, cpus)), *cmd]


@contextlib.contextmanager
def pinned(cpus: tuple[int, ...] | None) -> Iterator[None]:
    """This thread (and the threads it starts, e.g. ORT's pool) on ``cpus`` for a while."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


# --- raw ONNX Runtime --------------------------------------------------------------------


def raw_ort(path: Path, threads: int, duration: float) -> list[RawRow]:
    report = bench(
        [str(path)], batches=RAW_BATCHES, threads=(threads,), duration=duration, warmup=20
    )
    return [
        RawRow(r.batch, r.p50_ms, r.p99_ms, r.inferences_per_s, r.samples_per_s)
        for r in report.result.results
    ]


# --- servers -----------------------------------------------------------------------------


def row_text(row: Row) -> str:
    """One measured row as a progress line (throughput, p50, p99, the batch the server formed)."""
    if row.throughput is None:
        return f"FAILED {row.error}"
    text = f"{row.throughput:.1f} infer/s, p50 {row.p50_ms:.3f} ms, p99 {row.p99_ms:.3f} ms"
    if row.server_batch is not None:
        text += f", batch formed {row.server_batch:.2f}"
    return text + (f" ({row.error})" if row.error else "")


def settings_line(args: argparse.Namespace, versions: str = "", pins: str = "") -> str:
    """The header line of a perf_analyzer benchmark: cores, versions (``versions`` adds the
    front ends'), thread budget, CPU pins, batching and windows, the load average."""
    import platform

    import onnxruntime as ort

    from machine import load_average

    pinned = f"; {pins}" if pins else ""
    return (
        f"{usable_cores()} usable cores, Python {platform.python_version()}, onnxruntime "
        f"{ort.__version__}{versions}; thread budget {args.threads}{pinned}; max batch "
        f"{args.max_batch}, queue delay {args.queue_delay_ms} ms; perf_analyzer "
        f"{args.interval_ms} ms windows, {args.rounds} rounds; load average {load_average()}"
    )


def median_of(values: Sequence[float | None]) -> float | None:
    """The median of the values measured (None where none was)."""
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def free_port(span: int = 1) -> int:
    """A port with ``span`` consecutive free ports from it (pytriton needs 3)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + span < 65535 and all(_free(port + k) for k in range(1, span)):
            return port
    raise RuntimeError("no free port range")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (OSError, ValueError):
        return 0


@contextlib.contextmanager
def running(
    cmd: list[str], url: str, model: str, log: Path, timeout: float = 180
) -> Iterator[None]:
    """Start a server in its own process group; yield once the model is ready; stop it."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + timeout
            while _get(f"{url}/v2/models/{model}/ready") != 200:
                if proc.poll() is not None:
                    tail = log.read_text(errors="replace").strip().splitlines()[-5:]
                    raise RuntimeError(f"exited with {proc.returncode}: {' | '.join(tail)}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"not ready after {timeout:.0f} s (log: {log})")
                time.sleep(0.25)
            yield
        finally:
            _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    # pytriton and Triton want SIGINT; uvicorn and ferry take either.
    for sig, wait in ((signal.SIGINT, 30), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def ferry_command(ferry: Path, repo: Path, port: int) -> list[str]:
    return [str(ferry), "serve", str(repo), "--port", str(port)]


def ferry_missing(ferry: Path) -> str | None:
    """Why `ferry serve` cannot run yet, or None."""
    if not ferry.exists():
        return f"{ferry} does not exist (pip install -e '.[serve]' into .venv)"
    done = subprocess.run([str(ferry), "serve", "--help"], capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return f"`ferry serve` is not available yet ({lines[-1] if lines else done.returncode})"
    return None


def ferry_repo(
    workdir: Path, name: str, model: Path, budget: int, max_batch: int, delay_ms: float
) -> Path:
    """REPO/<name>/1/model.onnx plus a ferry.toml: batching as Triton gets it and ferry's own
    instances x threads split of the thread budget."""
    instances, threads = ModelConfig().parallelism(budget)
    repo = workdir / f"repo-{name}"
    (repo / name / "1").mkdir(parents=True, exist_ok=True)
    shutil.copy(model, repo / name / "1" / "model.onnx")
    (repo / name / "ferry.toml").write_text(
        f"max_batch_size = {max_batch}\nmax_queue_delay_ms = {delay_ms}\n"
        f"instances = {instances}\nintra_op_threads = {threads}\n"
    )
    return repo


# --- clients -----------------------------------------------------------------------------


def perf_analyzer(
    pa_dir: Path,
    url: str,
    model: str,
    concurrency: int,
    interval_ms: int,
    stable: bool,
    out: Path,
    cpus: tuple[int, ...] | None = None,
    batch: int = 1,
    protocol: str = "http",
) -> Row:
    """One concurrency level with perf_analyzer; its CSV (usec) becomes a Row. ``stable``
    keeps perf_analyzer's own check (3 windows within 10 %, at most 10 tries); without it
    the figures come from 3 windows whatever they vary. ``protocol`` "grpc" drives the gRPC
    endpoint ``url`` ("host:port") instead (benchmarks/serve_grpc.py)."""
    csv_path = out / f"pa-{model}-{concurrency}-{time.monotonic_ns()}.csv"
    cmd = [str(pa_dir / "perf_analyzer"), "-m", model, "-u", url.removeprefix("http://")]
    cmd += ["-i", protocol, "-b", str(batch)]
    cmd += ["--concurrency-range", f"{concurrency}:{concurrency}"]
    cmd += ["--measurement-interval", str(interval_ms), "--input-data", "random"]
    cmd += ["-f", str(csv_path)]
    if not stable:
        cmd += ["--stability-percentage", "1000", "--max-trials", "3"]
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join(
        p for p in (str(pa_dir / "lib"), env.get("LD_LIBRARY_PATH")) if p
    )
    # Its own check tries at most 10 windows; past that (plus start-up) it is stuck, e.g. at
    # exit waiting for a response the server never sends. The CSV is written before that.
    limit = 30 + 12 * interval_ms / 1e3
    row = Row("", "perf_analyzer", concurrency, request_batch=batch)
    try:
        done = subprocess.run(
            taskset(cpus, cmd), capture_output=True, text=True, env=env, timeout=limit
        )
        code, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as e:
        code, stdout, stderr = None, _text(e.stdout), _text(e.stderr)
        row.error = f"perf_analyzer still running after {limit:.0f} s (killed)"
        if csv_path.exists():
            row.error += ": its CSV was written, so some requests were never answered"
    if code not in (0, None) or not csv_path.exists():
        lines = [ln for ln in (stdout + stderr).splitlines() if ln.strip()]
        row.error = row.error or f"perf_analyzer exit {code}: {lines[-1] if lines else ''}"
        return row
    with csv_path.open() as f:
        record = next(csv.DictReader(f))
    us = {k.strip(): float(v) for k, v in record.items() if k and v not in (None, "")}
    row.throughput = us["Inferences/Second"]
    row.p50_ms, row.p90_ms, row.p99_ms = (us[f"p{p} latency"] / 1e3 for p in (50, 90, 99))
    compute = ("Server Compute Input", "Server Compute Infer", "Server Compute Output")
    if all(k in us for k in ("Server Queue", *compute)):  # the floor has no server split
        row.server_queue_ms = us["Server Queue"] / 1e3
        row.server_compute_ms = sum(us[k] for k in compute) / 1e3
    counts = re.search(r"Inference count: (\d+)\s+Execution count: (\d+)", stdout)
    if counts and int(counts[2]):
        row.server_batch = int(counts[1]) / int(counts[2])
    return row


def _text(data: bytes | str | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else data or ""


def loadgen(
    url: str, model: str, concurrency: int, duration: float, cpus: tuple[int, ...] | None = None
) -> Row:
    from onnxferry.bench.remote import run_load_test
    from onnxferry.errors import FerryError

    row = Row("", "loadgen", concurrency)
    try:
        with pinned(cpus):
            report = run_load_test(url, model, concurrency=[concurrency], duration_s=duration)
    except FerryError as e:
        row.error = str(e)
        return row
    r = report.rows[0]
    row.throughput, row.p50_ms, row.p90_ms, row.p99_ms = (
        r.throughput_per_s,
        r.p50_ms,
        r.p90_ms,
        r.p99_ms,
    )
    if r.server is not None:
        row.server_queue_ms = r.server.queue_ms
        row.server_compute_ms = r.server.compute_ms
        row.server_batch = r.server.batch_size
    if r.errors:
        row.error = f"{r.errors} failed requests, first: {r.first_error}"
    return row


# --- the run -----------------------------------------------------------------------------


@dataclass
class Settings:
    threads: int
    levels: tuple[int, ...]
    duration: float
    interval_ms: int
    quick: bool
    max_batch: int
    delay_ms: float
    bench_python: Path | None
    pa_dir: Path | None
    ferry: Path
    systems: tuple[str, ...]
    workdir: Path
    cross_check: bool
    pin: Pinning
    request_batch: int | None  # rows per request for the batched rows; None: raw's best


def measure_model(name: str, st: Settings) -> ModelResult:
    result = ModelResult(name)
    path = st.workdir / f"{name}.onnx"
    onnx.save(MODELS[name](), str(path))
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"[{name}] load average {load}; raw ONNX Runtime, batches {list(RAW_BATCHES)}", flush=True
    )
    with pinned(st.pin.server):
        result.raw = raw_ort(path, st.threads, max(0.5, st.duration / 2))
    for system in st.systems:
        port = free_port(3)
        url = f"http://127.0.0.1:{port}"
        cmd, reason = _server_command(system, name, path, port, st)
        if cmd is None:
            result.skipped.append(f"{system}: {reason}")
            print(f"[{name}] skip {system}: {reason}", flush=True)
            continue
        use_pa = st.pa_dir is not None and system != "fastapi"
        print(f"[{name}] {system} on {url}", flush=True)
        try:
            log = st.workdir / f"{system}-{name}.log"
            with running(taskset(st.pin.server, cmd), url, name, log):
                for c in st.levels:
                    row = measure_level(url, name, c, st, use_pa)
                    rows = [row]
                    if st.cross_check and row.client == "perf_analyzer":
                        rows.append(loadgen(url, name, c, st.duration, st.pin.client))
                    for r in rows:
                        r.system = system
                        result.rows.append(r)
                        print(f"    c={c} {r.client}: {_row_text(r)}", flush=True)
                if use_pa and st.pa_dir is not None and system in BATCHED_SYSTEMS:
                    batch = st.request_batch or _best(result.raw).batch
                    row = perf_analyzer(
                        st.pa_dir, url, name, 8, st.interval_ms, False, st.workdir,
                        st.pin.client, batch,
                    )  # fmt: skip
                    row.system = system
                    result.rows.append(row)
                    print(f"    c=8 batch {batch} per request: {_row_text(row)}", flush=True)
        except RuntimeError as e:
            result.skipped.append(f"{system}: server did not start: {e}")
            print(f"[{name}] {system} failed: {e}", flush=True)
    result.load_average = os.getloadavg()[0]
    return result


def measure_level(url: str, name: str, c: int, st: Settings, use_pa: bool) -> Row:
    """perf_analyzer when asked, falling back to the load generator if it fails."""
    cpus = st.pin.client
    if not use_pa or st.pa_dir is None:
        return loadgen(url, name, c, st.duration, cpus)
    row = perf_analyzer(st.pa_dir, url, name, c, st.interval_ms, not st.quick, st.workdir, cpus)
    if row.throughput is None and not st.quick:
        row = perf_analyzer(st.pa_dir, url, name, c, st.interval_ms, False, st.workdir, cpus)
        if row.throughput is not None:
            row.error = "unstable: 3 windows without perf_analyzer's 10 % check"
    if row.throughput is not None:
        return row
    fallback = loadgen(url, name, c, st.duration, cpus)
    fallback.client = "loadgen"
    fallback.error = "; ".join(e for e in (row.error, fallback.error) if e)
    return fallback


def _server_command(
    system: str, name: str, path: Path, port: int, st: Settings
) -> tuple[list[str] | None, str]:
    if system == "ferry":
        missing = ferry_missing(st.ferry)
        if missing:
            return None, missing
        repo = ferry_repo(st.workdir, name, path, st.threads, st.max_batch, st.delay_ms)
        return ferry_command(st.ferry, repo, port), ""
    if system == "floor":  # ferry's HTTP stack, so ferry's interpreter
        cmd = [sys.executable, str(BACKENDS), "floor", str(path), "--name", name]
        return [*cmd, "--port", str(port), "--threads", "1", "--max-batch", str(st.max_batch)], ""
    if st.bench_python is None or not st.bench_python.exists():
        return None, (
            "no benchmark venv interpreter (give --bench-python or FERRY_BENCH_PYTHON; "
            "make one with benchmarks/setup_bench_env.sh)"
        )
    module = {"triton": "pytriton", "fastapi": "fastapi"}[system]
    probe = "pytriton.triton" if system == "triton" else "fastapi"
    if (
        subprocess.run(
            [str(st.bench_python), "-c", f"import {probe}"], capture_output=True
        ).returncode
        != 0
    ):
        return None, f"{st.bench_python} cannot import {probe} (run setup_bench_env.sh)"
    cmd = [str(st.bench_python), str(BACKENDS), module, str(path), "--name", name]
    cmd += ["--port", str(port), "--threads", str(st.threads)]
    cmd += ["--max-batch", str(st.max_batch), "--queue-delay-us", str(int(st.delay_ms * 1000))]
    return cmd, ""


def _row_text(row: Row) -> str:
    if row.error and row.throughput is None:
        return f"FAILED {row.error}"
    text = f"{row.throughput:.1f} infer/s, p50 {row.p50_ms:.3f} ms, p99 {row.p99_ms:.3f} ms"
    return text + (f" ({row.error})" if row.error else "")


# --- report ------------------------------------------------------------------------------


def tables(result: ModelResult, st: Settings) -> list[Table]:
    raw = Table(
        f"{result.model}: raw ONNX Runtime in-process, {st.threads} intra-op threads",
        ["batch", "p50 ms", "p99 ms", "runs/s", "samples/s"],
        [[r.batch, r.p50_ms, r.p99_ms, r.runs_per_s, r.samples_per_s] for r in result.raw],
    )
    columns = ["system", "client", "concurrency", "infer/s", "p50 ms", "p90 ms", "p99 ms"]
    columns += ["server queue ms", "server compute ms", "server batch", "error"]
    order = {s: i for i, s in enumerate(SYSTEMS)}
    rows = sorted(
        (r for r in result.rows if r.request_batch == 1),
        key=lambda r: (r.concurrency, order.get(r.system, 9), r.client),
    )
    served = Table(
        f"{result.model}: servers, batch 1 per request, max batch {st.max_batch}, "
        f"queue delay {st.delay_ms:g} ms",
        columns,
        [
            [
                r.system,
                r.client,
                r.concurrency,
                r.throughput,
                r.p50_ms,
                r.p90_ms,
                r.p99_ms,
                r.server_queue_ms,
                r.server_compute_ms,
                r.server_batch,
                r.error,
            ]
            for r in rows
        ],
    )
    batched = [r for r in result.rows if r.request_batch > 1]
    tables_ = [raw, served]
    if batched:
        tables_.append(
            Table(
                f"{result.model}: requests of the raw best batch, perf_analyzer",
                ["system", "concurrency", "rows/request", "samples/s", "p50 ms", "server batch"],
                [
                    [r.system, r.concurrency, r.request_batch, r.throughput, r.p50_ms,
                     r.server_batch, ]
                    for r in batched
                ],
            )
        )  # fmt: skip
    return tables_


def _best(raw: list[RawRow]) -> RawRow:
    return max(raw, key=lambda r: r.samples_per_s)


def ratios(result: ModelResult, st: Settings) -> list[str]:
    """The issue's three targets for ferry, and the same figures for the others."""
    lines = []
    best = _best(result.raw)
    bare = next(r for r in result.raw if r.batch == 1)
    lines.append(
        f"{result.model}: raw ORT best batch {best.batch} at {best.samples_per_s:.0f} samples/s;"
        f" bare session.run p50 at batch 1 {bare.p50_ms:.3f} ms"
    )

    def at(system: str, c: int, client: str | None = None) -> Row | None:
        """The row measured by ``client``, else perf_analyzer's, else any."""
        found = [
            r
            for r in result.rows
            if r.system == system
            and r.concurrency == c
            and r.throughput is not None
            and r.request_batch == 1
        ]
        found.sort(key=lambda r: (r.client != client, r.client != "perf_analyzer"))
        return found[0] if found else None

    for system in st.systems:
        r8, r1 = at(system, 8), at(system, 1)
        if r8 is None or r1 is None:
            why = next((s for s in result.skipped if s.startswith(f"{system}:")), "no data")
            lines.append(f"  {system}: n/a ({why})")
            continue
        goal = system == "ferry"
        triton8 = at("triton", 8, r8.client)  # the same client where there is one
        if system != "triton":
            if triton8 is not None:
                lines.append(
                    _judge(
                        f"  {system}/triton throughput at c=8 ({_clients(r8, triton8)})",
                        (r8.throughput or 0.0) / (triton8.throughput or 1.0),
                        TARGET_VS_TRITON,
                        goal,
                        ">=",
                    )
                )
            else:
                lines.append(f"  {system}/triton throughput at c=8: n/a (no triton figure)")
        # the floor runs nothing: hold it to the batch ferry formed
        formed = (
            r8.server_batch if system != "floor" else getattr(at("ferry", 8), "server_batch", None)
        )
        batch = _nearest_batch(formed)
        raw = next(r for r in result.raw if r.batch == batch)
        lines.append(
            _judge(
                f"  {system}/raw-ORT throughput at c=8 (raw at batch {batch}, the batch "
                f"{'the server formed' if formed else 'of one request: no server stats'})",
                (r8.throughput or 0.0) / raw.samples_per_s,
                TARGET_VS_RAW,
                goal,
                ">=",
            )
        )
        lines.append(
            _judge(
                f"  {system} p50 at c=1 minus bare session.run p50 (ms)",
                (r1.p50_ms or 0.0) - bare.p50_ms,
                TARGET_P50_OVER_RAW_MS,
                goal,
                "<=",
            )
        )
        batched = next((r for r in result.rows if r.system == system and r.request_batch > 1), None)
        raw_b = next((r for r in result.raw if batched and r.batch == batched.request_batch), None)
        if batched is not None and batched.throughput is not None and raw_b is not None:
            lines.append(
                _judge(
                    f"  {system}/raw-ORT samples/s at c=8, requests of batch {raw_b.batch} (raw "
                    f"at batch {raw_b.batch})",
                    batched.throughput / raw_b.samples_per_s,
                    TARGET_VS_RAW,
                    goal,
                    ">=",
                )
            )
    return lines


def _clients(a: Row, b: Row) -> str:
    return f"both {a.client}" if a.client == b.client else f"{a.client} vs {b.client}"


def _nearest_batch(formed: float | None) -> int:
    """The raw batch size nearest (in log scale) to the server's average batch; 1 when the
    server reports none (a server that does not batch runs one request at a time)."""
    want = max(formed or 1.0, 1.0)
    return min(RAW_BATCHES, key=lambda b: abs(np.log2(b) - np.log2(want)))


def _judge(label: str, value: float, target: float, goal: bool, op: str) -> str:
    ok = value >= target if op == ">=" else value <= target
    verdict = ("PASS" if ok else "FAIL") if goal else "info"
    return f"{label}: {value:.3f} (target {op} {target:g}) {verdict}"


# --- main --------------------------------------------------------------------------------


def _default_python() -> str | None:
    env = os.environ.get("FERRY_BENCH_PYTHON")
    if env:
        return env
    default = Path("/work/bench-venv/bin/python")
    return str(default) if default.exists() else None


def _default_pa() -> str | None:
    env = os.environ.get("FERRY_PERF_ANALYZER")
    if env:
        return env
    default = Path("/work/pa")
    return str(default) if (default / "perf_analyzer").exists() else None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="short windows (about 3 minutes)")
    p.add_argument("--duration", type=float, help="seconds per level (default 5, quick 1.5)")
    p.add_argument("--threads", type=int, help="ORT thread budget (default: usable cores)")
    p.add_argument("--models", default="cnn,mlp")
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--concurrency", default=",".join(map(str, LEVELS)))
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument(
        "--request-batch",
        type=int,
        help="rows per request for the extra c=8 rows of ferry and the floor (default: the "
        "batch raw ORT was fastest at)",
    )
    p.add_argument("--queue-delay-ms", type=float, default=0.5)
    p.add_argument(
        "--bench-python",
        default=_default_python(),
        help="interpreter with nvidia-pytriton, fastapi, uvicorn, onnxruntime "
        "(env FERRY_BENCH_PYTHON; default /work/bench-venv/bin/python)",
    )
    p.add_argument(
        "--perf-analyzer",
        default=_default_pa(),
        help="dir with perf_analyzer and lib/ (env FERRY_PERF_ANALYZER; default "
        "/work/pa); without it the load generator measures every server",
    )
    p.add_argument("--loadgen-only", action="store_true", help="never use perf_analyzer")
    p.add_argument(
        "--pin",
        choices=["auto", "on", "off"],
        default="auto",
        help="servers and raw ORT on the first --threads cores, clients on the rest (auto: "
        "when 2 or more cores are left for the clients)",
    )
    p.add_argument(
        "--no-cross-check",
        action="store_true",
        help="skip the extra load-generator rows for the servers perf_analyzer measures "
        "(they put FastAPI, which only the load generator can measure, on equal terms)",
    )
    p.add_argument("--ferry", default=str(Path(sys.executable).with_name("ferry")))
    p.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    systems = tuple(s.strip() for s in args.systems.split(",") if s.strip())
    if unknown or any(s not in SYSTEMS for s in systems):
        print(f"models are {list(MODELS)}, systems are {list(SYSTEMS)}", file=sys.stderr)
        return 2
    pa_dir = None if args.loadgen_only or not args.perf_analyzer else Path(args.perf_analyzer)
    if pa_dir is not None and not (pa_dir / "perf_analyzer").exists():
        print(f"no perf_analyzer in {pa_dir}; using the load generator", flush=True)
        pa_dir = None
    duration = args.duration or (1.5 if args.quick else 5.0)
    threads = args.threads or usable_cores()
    with tempfile.TemporaryDirectory(prefix="ferry-serve-bench-") as tmp:
        st = Settings(
            threads=threads,
            levels=tuple(int(c) for c in args.concurrency.split(",")),
            duration=duration,
            interval_ms=int(duration * 1000),
            quick=args.quick,
            max_batch=args.max_batch,
            delay_ms=args.queue_delay_ms,
            bench_python=Path(args.bench_python) if args.bench_python else None,
            pa_dir=pa_dir,
            ferry=Path(args.ferry),
            systems=systems,
            workdir=Path(tmp),
            cross_check=pa_dir is not None and not args.no_cross_check,
            pin=plan_pinning(threads, args.pin),
            request_batch=args.request_batch,
        )
        print(_header(st), flush=True)
        results = [measure_model(m, st) for m in models]
        print()
        print(_header(st))
        for result in results:
            for table in tables(result, st):
                print()
                print(render_table(table))
            print()
            print("\n".join(ratios(result, st)))
            print(f"  1-minute load average at the end: {result.load_average:.1f}")
            for s in result.skipped:
                print(f"  skipped {s}")
        if args.json:
            data = {"settings": _settings_dict(st), "results": [asdict(r) for r in results]}
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(data, indent=2) + "\n")
    return 0


def _header(st: Settings) -> str:
    import platform

    import onnxruntime as ort

    client = (
        f"perf_analyzer ({st.pa_dir}) for ferry and triton; onnxferry.bench.remote for fastapi "
        "(perf_analyzer needs /v2/models/{m}/config, which a plain FastAPI server lacks)"
        if st.pa_dir
        else "onnxferry.bench.remote for every server (no perf_analyzer)"
    )
    if st.cross_check:
        client += "; loadgen rows for ferry and triton too, to compare fastapi like for like"
    return (
        f"machine: {os.cpu_count()} cores ({usable_cores()} usable), {platform.machine()}, "
        f"Python {platform.python_version()}, onnxruntime {ort.__version__}\n"
        f"thread budget: {st.threads} intra-op threads per server; {st.duration:g} s per level;"
        f" concurrency {list(st.levels)}\nclient: {client}\n"
        + (
            f"pinned: servers and raw ORT on cores {list(st.pin.server)}, clients on "
            f"{list(st.pin.client or ())}"
            if st.pin.server
            else "servers and clients share the machine's cores (not pinned)"
        )
    )


def _settings_dict(st: Settings) -> dict[str, Any]:
    d = asdict(st)
    return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}


if __name__ == "__main__":
    raise SystemExit(main())
