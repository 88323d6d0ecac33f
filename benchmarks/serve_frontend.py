"""`ferry serve` on uvicorn + httptools against granian (Rust), the same app, beside raw ONNX
Runtime and Triton.

    bash ../shared/tools/perf_analyzer.sh /work/pa      # once: perf_analyzer and its libs
    .venv/bin/python benchmarks/serve_frontend.py [--rounds 2] [--json build/frontend.json]

Two models built here with random weights: **ocr**, a CNN shaped like PaddleOCR's text-direction
classifier (x[batch,3,48,192] -> 3 Conv+Relu, strides 2,2,1 -> GAP -> Gemm 2 -> Softmax) and
serve.py's **mlp** (x[batch,256] -> 512 -> 512 -> 10). For each model, in one process run:

- raw ORT: ``session.run`` in this process at batch 1..32, ``--threads`` intra-op threads
  (onnxferry.bench): the best samples/s is the ceiling, the bare batch-1 p50 the c=1 baseline.
- ferry on each front: ``ferry serve REPO``'s app (the same ``build_app`` + ``ShutdownGuard``,
  the same ferry.toml: max batch 8, queue delay 0.5 ms, instances x threads = the budget) in
  one process per front, ``serve_frontend.py serve FRONT REPO --port P``: on uvicorn +
  httptools + uvloop as `ferry serve` runs it, or on granian embedded in the same uvloop
  loop (``granian.server.embed``, HTTP/1.1, one Rust runtime thread), driven by
  perf_analyzer (C++) over HTTP with binary tensors, batch 1 per request, at concurrency 1, 8
  and 32. Rounds alternate the order of the fronts so a change of load hits both; figures are
  medians over the rounds.
- triton: Triton through nvidia-pytriton (serve_backends.py, the benchmark venv's interpreter,
  the same dynamic batching and thread budget) when that venv has it; otherwise the row is
  absent and the ratio uses the figure recorded in an earlier run (labelled as such).

Servers and raw ORT run on the first ``--threads`` cores, perf_analyzer on the rest (``--pin
on``, the default when there are more cores than threads: taskset), so the client's CPU does
not count against the server. The CPU's flags and the load average are printed first.
"server CPU us/req" is the user + system time of the server's processes over a level divided by
the requests it answered (V2 statistics), the figure a busy machine distorts least; on the raw
ORT row it is wall time per sample times the thread budget.
Targets (issue 16), judged on the better front: at c=8 ferry >= 0.85x raw ORT at its best batch
on the OCR-sized CNN and >= 2.5x Triton; on the MLP, ferry's c=1 p50 at most 0.2 ms above the
bare ``session.run`` p50.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import psutil  # type: ignore[import-untyped]  # in the dev lock, without stubs
from onnx import helper

from machine import cpu_summary, load_average
from onnxferry.report import Table, render_table
from onnxferry.runtime import usable_cores
from serve import (
    BACKENDS,
    RawRow,
    Row,
    _model,
    _weights,
    ferry_missing,
    ferry_repo,
    free_port,
    median_of,
    mlp,
    perf_analyzer,
    pinned,
    pins_text,
    plan_pinning,
    raw_ort,
    row_text,
    running,
    settings_line,
    taskset,
)

FRONTS = ("uvicorn", "granian")
LEVELS = (1, 8, 32)
TARGET_VS_RAW = 0.85
TARGET_VS_TRITON = 2.5
TARGET_P50_OVER_BARE_MS = 0.2
RECORDED_TRITON = (745.0, "issue 16: a real PaddleOCR classifier, c=8, perf_analyzer, 2 cores")
"""Triton's c=8 infer/s on the OCR classifier from an earlier run, used (and labelled as such)
when pytriton is not here."""


def ocr_cnn() -> onnx.ModelProto:
    """x[batch,3,48,192] -> Conv 3->16 s2 -> Relu -> Conv 16->32 s2 -> Relu -> Conv 32->64
    -> Relu -> GAP -> Gemm 2 -> Softmax: the shape and rough cost of PaddleOCR's classifier."""
    rng = np.random.default_rng(2)
    inits = [_weights(rng, "w1", (16, 3, 3, 3)), _weights(rng, "b1", (16,))]
    inits += [_weights(rng, "w2", (32, 16, 3, 3)), _weights(rng, "b2", (32,))]
    inits += [_weights(rng, "w3", (64, 32, 3, 3)), _weights(rng, "b3", (64,))]
    inits += [_weights(rng, "w4", (64, 2)), _weights(rng, "b4", (2,))]
    s2: dict[str, Any] = {"strides": [2, 2], "pads": [1, 1, 1, 1]}
    s1: dict[str, Any] = {"strides": [1, 1], "pads": [1, 1, 1, 1]}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], **s2),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], **s2),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], **s1),
        helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("GlobalAveragePool", ["r3"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "w4", "b4"], ["g"]),
        helper.make_node("Softmax", ["g"], ["y"], axis=1),
    ]
    return _model("ocr", nodes, ["batch", 3, 48, 192], ["batch", 2], inits)


MODELS: dict[str, Callable[[], onnx.ModelProto]] = {"ocr": ocr_cnn, "mlp": mlp}


@dataclass
class ModelRun:
    model: str
    raw: list[RawRow] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)  # system = front, or "triton"
    cpu_us: list[tuple[str, int, float]] = field(default_factory=list)  # system, c, us/request
    notes: list[str] = field(default_factory=list)


def measure_model(name: str, args: argparse.Namespace, workdir: Path) -> ModelRun:
    run = ModelRun(name)
    path = workdir / f"{name}.onnx"
    onnx.save(MODELS[name](), str(path))
    print(f"[{name}] load average {load_average()}; raw ONNX Runtime", flush=True)
    with pinned(args.pin.server):
        run.raw = raw_ort(path, args.threads, args.raw_seconds)
    best = max(run.raw, key=lambda r: r.samples_per_s)
    bare = next(r for r in run.raw if r.batch == 1)
    print(
        f"[{name}] raw best {best.samples_per_s:.0f} samples/s at batch {best.batch}; bare "
        f"batch-1 p50 {bare.p50_ms:.3f} ms",
        flush=True,
    )
    repo = ferry_repo(workdir, name, path, args.threads, args.max_batch, args.queue_delay_ms)
    for round_ in range(args.rounds):
        for front in FRONTS if round_ % 2 == 0 else tuple(reversed(FRONTS)):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            cmd = [sys.executable, str(Path(__file__).resolve()), "serve", front, str(repo)]
            cmd += ["--port", str(port)]
            try:
                with running(taskset(args.pin.server, cmd), url, name, workdir / f"{front}.log"):
                    for c in args.levels:
                        row = _measured(run, front, url, name, c, args, workdir)
                        print(f"  round {round_ + 1} {front} c={c}: {row_text(row)}", flush=True)
            except RuntimeError as e:
                run.notes.append(f"{front} did not start in round {round_ + 1}: {e}")
                print(f"  {front} failed: {e}", flush=True)
    triton = _triton_command(name, path, args)
    if isinstance(triton, str):
        run.notes.append(f"triton not measured: {triton}")
        print(f"[{name}] triton: {triton}", flush=True)
    else:
        port = free_port(3)
        url = f"http://127.0.0.1:{port}"
        try:
            cmd = [*triton, "--port", str(port)]
            with running(taskset(args.pin.server, cmd), url, name, workdir / "triton.log"):
                for c in args.levels:
                    row = _measured(run, "triton", url, name, c, args, workdir)
                    print(f"  triton c={c}: {row_text(row)}", flush=True)
        except RuntimeError as e:
            run.notes.append(f"triton did not start: {e}")
    return run


def _measured(
    run: ModelRun, system: str, url: str, name: str, c: int, args: argparse.Namespace,
    workdir: Path,
) -> Row:  # fmt: skip
    """One level, with the server's CPU time per request over it."""
    with server_cpu_per_request(url, name) as measured:
        row = stable_level(url, name, c, args, workdir)
    row.system = system
    run.rows.append(row)
    if measured:
        cpu_us = measured[0]
        run.cpu_us.append((system, c, cpu_us))
        row.error = "; ".join(e for e in (row.error, f"server CPU {cpu_us:.0f} us/request") if e)
    return row


@contextmanager
def server_cpu_per_request(url: str, name: str) -> Iterator[list[float]]:
    """``with server_cpu_per_request(url, name) as cpu_us: ...``: afterwards ``cpu_us`` holds
    the server's CPU microseconds per inference answered inside the block (empty if none)."""
    measured: list[float] = []
    before = _server_cpu(), _answered(url, name)
    yield measured
    after = _server_cpu(), _answered(url, name)
    if after[1] > before[1]:
        measured.append((after[0] - before[0]) / (after[1] - before[1]) * 1e6)


def _server_cpu() -> float:
    """User + system seconds of this process's children and theirs (the server under test:
    perf_analyzer has ended when this runs)."""
    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _answered(url: str, name: str) -> int:
    """Successful inferences so far (V2 statistics: ferry and Triton both keep them)."""
    import urllib.request

    with urllib.request.urlopen(f"{url}/v2/models/{name}/stats", timeout=5) as r:
        stats = json.loads(r.read())
    return sum(int(m["inference_stats"]["success"]["count"]) for m in stats["model_stats"])


def stable_level(url: str, name: str, c: int, args: argparse.Namespace, workdir: Path) -> Row:
    """perf_analyzer with its 10 % check; failing that, 3 windows without it (marked)."""
    row = perf_analyzer(args.pa_dir, url, name, c, args.interval_ms, True, workdir, args.pin.client)
    if row.throughput is None:
        row = perf_analyzer(
            args.pa_dir, url, name, c, args.interval_ms, False, workdir, args.pin.client
        )
        row.error = row.error or "unstable: 3 windows without the 10 % check"
    return row


def _triton_command(name: str, path: Path, args: argparse.Namespace) -> list[str] | str:
    python = args.bench_python
    if python is None or not Path(python).exists():
        return "no benchmark venv with nvidia-pytriton (benchmarks/setup_bench_env.sh)"
    probe = subprocess.run([python, "-c", "import pytriton.triton"], capture_output=True)
    if probe.returncode != 0:
        return f"{python} cannot import pytriton.triton"
    cmd = [python, str(BACKENDS), "pytriton", str(path), "--name", name]
    cmd += ["--threads", str(args.threads), "--max-batch", str(args.max_batch)]
    return [*cmd, "--queue-delay-us", str(int(args.queue_delay_ms * 1000))]


def medians(run: ModelRun, system: str, c: int) -> dict[str, float | None]:
    rows = [r for r in run.rows if r.system == system and r.concurrency == c and r.throughput]
    return {
        "runs": float(len(rows)),
        "throughput": median_of([r.throughput for r in rows]),
        "p50_ms": median_of([r.p50_ms for r in rows]),
        "p99_ms": median_of([r.p99_ms for r in rows]),
        "batch": median_of([r.server_batch for r in rows]),
    }


def table(run: ModelRun, args: argparse.Namespace) -> Table:
    best = max(run.raw, key=lambda r: r.samples_per_s)
    body: list[list[object]] = []
    for c in args.levels:
        for system in (*FRONTS, "triton"):
            m = medians(run, system, c)
            if not m["runs"]:
                continue
            tput = m["throughput"] or 0.0
            cpu = median_of([u for s_, c_, u in run.cpu_us if s_ == system and c_ == c])
            body.append(
                [system, c, int(m["runs"] or 0), round(tput, 1),
                 f"{tput / best.samples_per_s:.2f}x", _r(m["p50_ms"]), _r(m["p99_ms"]),
                 _r(m["batch"], 2), _r(cpu, 0)]
            )  # fmt: skip
    raw_us = 1e6 / best.samples_per_s
    body.append([f"raw ORT, batch {best.batch}", "", "", round(best.samples_per_s, 1), "1.00x",
                 "", "", "", round(raw_us * args.threads)])  # fmt: skip
    columns = ["system", "c", "runs", "infer/s", "vs raw best", "p50 ms", "p99 ms", "batch",
               "server CPU us/req"]  # fmt: skip
    title = f"{run.model}: medians over {args.rounds} rounds, batch 1 a request"
    return Table(title, columns, body)


def _r(value: float | None, digits: int = 3) -> object:
    return "" if value is None else round(value, digits)


def verdicts(run: ModelRun, args: argparse.Namespace) -> list[str]:
    """granian / uvicorn at each level, and the issue's targets for the better front."""
    lines: list[str] = []
    best = max(run.raw, key=lambda r: r.samples_per_s)
    bare = next(r for r in run.raw if r.batch == 1)
    for c in args.levels:
        u, g = medians(run, "uvicorn", c), medians(run, "granian", c)
        if u["throughput"] and g["throughput"]:
            cpu = {
                f: median_of([us for s_, c_, us in run.cpu_us if s_ == f and c_ == c])
                for f in FRONTS
            }
            cpu_text = (
                f", server CPU/request {cpu['granian'] / cpu['uvicorn']:.3f}x "
                f"({cpu['granian']:.0f} vs {cpu['uvicorn']:.0f} us)"
                if cpu["granian"] and cpu["uvicorn"]
                else ""
            )
            lines.append(
                f"  c={c}: granian/uvicorn throughput {g['throughput'] / u['throughput']:.3f}x, "
                f"p50 {g['p50_ms']:.3f} vs {u['p50_ms']:.3f} ms{cpu_text}"
            )
    c8 = {f: medians(run, f, 8)["throughput"] or 0.0 for f in FRONTS}
    front = max(c8, key=lambda f: c8[f])
    tput8 = c8[front]
    if 8 in args.levels and run.model == "ocr":
        lines.append(
            _judge(f"ferry ({front}) / raw ORT best batch {best.batch} at c=8",
                   tput8 / best.samples_per_s, TARGET_VS_RAW, ">=")
        )  # fmt: skip
        triton = medians(run, "triton", 8)["throughput"]
        if triton:
            label = "measured in this run"
        else:
            triton, source = RECORDED_TRITON
            label = f"RECORDED earlier, not this run: {source}"
        lines.append(
            _judge(f"ferry ({front}) / Triton at c=8 (Triton {triton:.0f}/s, {label})",
                   tput8 / triton, TARGET_VS_TRITON, ">=")
        )  # fmt: skip
    if 1 in args.levels and run.model == "mlp":
        p50 = {f: medians(run, f, 1)["p50_ms"] for f in FRONTS}
        for f, value in p50.items():
            if value is not None:
                lines.append(
                    _judge(f"ferry ({f}) c=1 p50 - bare session.run p50 ({bare.p50_ms:.3f} ms), ms",
                           value - bare.p50_ms, TARGET_P50_OVER_BARE_MS, "<=")
                )  # fmt: skip
    return lines


def _judge(label: str, value: float, target: float, op: str) -> str:
    ok = value >= target if op == ">=" else value <= target
    return f"  {label}: {value:.3f} (target {op} {target:g}) {'PASS' if ok else 'FAIL'}"


# --- the servers: the same ferry app on each front -----------------------------------------


def serve_front(front: str, repo: str, port: int) -> int:
    """``ferry serve REPO``'s app (build_app + ShutdownGuard, default settings, the repo's
    ferry.toml) on uvicorn exactly as `ferry serve` runs it, or on granian embedded in the same
    asyncio loop (uvloop), HTTP/1.1, one Rust runtime thread."""
    from onnxferry.serve.server import ServerOptions, ShutdownGuard, build_app, run_until_signal

    app = build_app(repo)
    options = ServerOptions(port=port)
    if front == "uvicorn":
        return run_until_signal(ShutdownGuard(app), app.started, options, "uvicorn")
    import asyncio
    import signal

    import uvloop
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.server.embed import Server

    server = Server(
        ShutdownGuard(app),
        address=options.host,
        port=port,
        interface=Interfaces.ASGI,
        http=HTTPModes.http1,
        websockets=False,
        backlog=2048,
        http1_settings=HTTP1Settings(header_read_timeout=int(options.header_timeout_s * 1000)),
        log_enabled=False,
    )
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.stop)
    loop.run_until_complete(server.serve())
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--models", default="ocr,mlp")
    p.add_argument("--concurrency", default=",".join(map(str, LEVELS)))
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, help="ORT thread budget (default: usable cores - 1)")
    p.add_argument("--pin", choices=["auto", "on", "off"], default="on")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--queue-delay-ms", type=float, default=0.5)
    p.add_argument("--interval-ms", type=int, default=3000, help="perf_analyzer's window")
    p.add_argument("--raw-seconds", type=float, default=1.0, help="raw ORT seconds per batch")
    p.add_argument(
        "--perf-analyzer", default=os.environ.get("FERRY_PERF_ANALYZER", "/work/pa"),
        help="dir with perf_analyzer and lib/ (env FERRY_PERF_ANALYZER; default /work/pa)",
    )  # fmt: skip
    p.add_argument(
        "--bench-python",
        default=os.environ.get("FERRY_BENCH_PYTHON", "/work/bench-venv/bin/python"),
        help="interpreter with nvidia-pytriton for the Triton rows",
    )
    p.add_argument("--ferry", default=str(Path(sys.executable).with_name("ferry")))
    p.add_argument("--json", type=Path, help="also write every figure here")
    args = p.parse_args(argv)
    cores = usable_cores()
    args.threads = args.threads or max(1, cores - 1 if args.pin != "off" else cores)
    args.levels = tuple(int(c) for c in args.concurrency.split(","))
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.pin = plan_pinning(args.threads, "on" if args.pin == "on" and cores > 1 else args.pin)
    args.pa_dir = Path(args.perf_analyzer)
    args.ferry = Path(args.ferry)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:  # serve FRONT REPO --port P: one server under test
        p = argparse.ArgumentParser(prog="serve_frontend.py serve")
        p.add_argument("front", choices=FRONTS)
        p.add_argument("repo")
        p.add_argument("--port", type=int, required=True)
        served = p.parse_args(argv[1:])
        return serve_front(served.front, served.repo, served.port)
    args = parse_args(argv)
    if not (args.pa_dir / "perf_analyzer").exists():
        print("no perf_analyzer: ../shared/tools/perf_analyzer.sh DIR, then --perf-analyzer DIR")
        return 2
    missing = ferry_missing(args.ferry)
    if missing or any(m not in MODELS for m in args.models):
        print(missing or f"models are {list(MODELS)}", file=sys.stderr)
        return 2
    import granian
    import uvicorn

    print(f"machine: {cpu_summary()}")
    versions = f", uvicorn {uvicorn.__version__}, granian {granian.__version__}"
    print(settings_line(args, versions, pins_text(args.pin)), flush=True)
    with tempfile.TemporaryDirectory(prefix="ferry-frontend-bench-") as tmp:
        runs = [measure_model(m, args, Path(tmp)) for m in args.models]
    for run in runs:
        print()
        print(render_table(table(run, args)))
        best = max(run.raw, key=lambda r: r.samples_per_s)
        bare = next(r for r in run.raw if r.batch == 1)
        print(
            f"{run.model}: raw ORT best {best.samples_per_s:.1f} samples/s at batch "
            f"{best.batch}; bare session.run p50 {bare.p50_ms:.4f} ms"
        )
        print("\n".join(verdicts(run, args)))
        for note in run.notes:
            print(f"  note: {note}")
    print(f"\nload average at the end: {load_average()} ({os.cpu_count()} logical CPUs)")
    if args.json:
        data = {
            "machine": cpu_summary(),
            "threads": args.threads,
            "runs": [asdict(r) for r in runs],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
