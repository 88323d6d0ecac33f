"""`ferry serve` over HTTP and over gRPC, driven by Triton's perf_analyzer (run by hand).

    bash ../shared/tools/perf_analyzer.sh /work/pa      # once: perf_analyzer and its libs
    .venv/bin/python benchmarks/serve_grpc.py --perf-analyzer /work/pa [--interval-ms 3000]

One ``ferry serve REPO --port P --grpc-port G`` per model (benchmarks/serve.py's small CNN
and MLP, with its ferry.toml: dynamic batching, instances x threads = the thread budget),
measured by perf_analyzer with ``-i http`` (binary tensors) and ``-i grpc`` (raw contents)
at concurrency 1 and 8, batch 1 per request, on the same server process, HTTP first: the
throughput, p50 and p99, and the server's queue and compute times and the batch it formed.
The CPU and its flags are printed first. ``--pin on`` puts the server on the first
``--threads`` cores (default: all but one) and the clients on the rest; by default client and
server share the machine's cores.

``--sequential N`` adds, on the same server, N calls one at a time per protocol with
tritonclient (sync clients, blocks of 200 alternating between HTTP and gRPC, so that a
change of load on a shared machine hits both): the client-side p10 and p50 of one call.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import onnx
import onnxruntime as ort

from machine import cpu_summary, load_average
from onnxferry.report import Table, render_table
from onnxferry.runtime import usable_cores
from serve import (
    MODELS,
    Row,
    ferry_command,
    ferry_missing,
    ferry_repo,
    free_port,
    perf_analyzer,
    pinned,
    pins_text,
    plan_pinning,
    running,
    taskset,
)

PROTOCOLS = ("http", "grpc")


def measure(
    name: str, pa_dir: Path, ferry: Path, workdir: Path, args: argparse.Namespace
) -> list[tuple[str, Row]]:
    """(protocol, row) for each level and protocol, on one server with both fronts."""
    path = workdir / f"{name}.onnx"
    onnx.save(MODELS[name](), str(path))
    repo = ferry_repo(workdir, name, path, args.threads, args.max_batch, args.queue_delay_ms)
    port, grpc_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [*ferry_command(ferry, repo, port), "--grpc-port", str(grpc_port)]
    rows = []
    cpus = args.pin.client
    with running(taskset(args.pin.server, cmd), url, name, workdir / f"ferry-{name}.log"):
        for c in args.levels:
            for protocol in PROTOCOLS:
                target = url if protocol == "http" else f"127.0.0.1:{grpc_port}"
                row = perf_analyzer(
                    pa_dir,
                    target,
                    name,
                    c,
                    args.interval_ms,
                    True,
                    workdir,
                    cpus,
                    protocol=protocol,
                )
                if row.throughput is None:  # perf_analyzer's 10 % check failed: 3 windows
                    row = perf_analyzer(
                        pa_dir, target, name, c, args.interval_ms, False, workdir, cpus,
                        protocol=protocol,
                    )  # fmt: skip
                    row.error = row.error or "unstable: 3 windows without the 10 % check"
                row.system = "ferry"
                rows.append((protocol, row))
                print(f"  [{name}] c={c} {protocol}: {_text(row)}", flush=True)
        if args.sequential:
            with pinned(cpus):
                one_at_a_time = sequential(name, path, url, grpc_port, args.sequential)
            for protocol, (p10, p50) in one_at_a_time.items():
                print(f"  [{name}] one at a time, {protocol}: p10 {p10:.3f} ms, p50 {p50:.3f} ms")
    return rows


def sequential(
    name: str, path: Path, url: str, grpc_port: int, calls: int
) -> dict[str, tuple[float, float]]:
    """Client-side (p10, p50) ms of one call at a time, per protocol, in alternating blocks."""
    import numpy as np
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    model = onnx.load(str(path))
    dims = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(0).standard_normal(dims).astype(np.float32)
    clients = {
        "http": (httpclient, httpclient.InferenceServerClient(url.removeprefix("http://"))),
        "grpc": (grpcclient, grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")),
    }
    calls_of = {}
    for protocol, (module, client) in clients.items():
        tensor = module.InferInput(model.graph.input[0].name, dims, "FP32")
        tensor.set_data_from_numpy(x)
        calls_of[protocol] = (client, [tensor])
    times: dict[str, list[float]] = {p: [] for p in clients}
    for block in range(max(1, calls // 200) + 1):  # the first block of each: warm-up
        for protocol, (client, inputs) in calls_of.items():
            for _ in range(200):
                start = time.perf_counter()
                client.infer(name, inputs)
                if block:
                    times[protocol].append((time.perf_counter() - start) * 1e3)
    for client, _ in calls_of.values():
        client.close()
    return {p: (float(np.percentile(t, 10)), float(np.median(t))) for p, t in times.items()}


def _text(row: Row) -> str:
    if row.throughput is None:
        return f"FAILED {row.error}"
    text = f"{row.throughput:.1f} infer/s, p50 {row.p50_ms:.3f} ms, p99 {row.p99_ms:.3f} ms"
    return text + (f" ({row.error})" if row.error else "")


def table(name: str, rows: list[tuple[str, Row]]) -> Table:
    columns = ["protocol", "c", "infer/s", "p50 ms", "p99 ms", "queue ms", "compute ms", "batch"]
    body = []
    for protocol, r in rows:
        if r.throughput is None:
            body.append([protocol, r.concurrency, f"FAILED: {r.error}", "", "", "", "", ""])
            continue
        body.append(
            [
                protocol,
                r.concurrency,
                round(r.throughput, 1),
                round(r.p50_ms or 0, 3),
                round(r.p99_ms or 0, 3),
                "" if r.server_queue_ms is None else round(r.server_queue_ms, 3),
                "" if r.server_compute_ms is None else round(r.server_compute_ms, 3),
                "" if r.server_batch is None else round(r.server_batch, 2),
            ]
        )
    return Table(f"{name}: ferry serve, perf_analyzer, batch 1 per request", columns, body)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--models", default="cnn,mlp")
    p.add_argument("--concurrency", default="1,8")
    p.add_argument(
        "--threads", type=int, help="ORT thread budget (default: usable cores, - 1 pinned)"
    )
    p.add_argument("--pin", choices=["auto", "on", "off"], default="off")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--queue-delay-ms", type=float, default=0.5)
    p.add_argument("--interval-ms", type=int, default=3000, help="perf_analyzer's window")
    p.add_argument(
        "--perf-analyzer",
        default=os.environ.get("FERRY_PERF_ANALYZER", "/work/pa"),
        help="dir with perf_analyzer and lib/ (env FERRY_PERF_ANALYZER; default /work/pa)",
    )
    p.add_argument("--sequential", type=int, default=0, help="N calls one at a time, each")
    p.add_argument("--ferry", default=str(Path(sys.executable).with_name("ferry")))
    args = p.parse_args(argv)
    args.levels = tuple(int(c) for c in args.concurrency.split(","))
    cores = usable_cores()
    args.threads = args.threads or max(1, cores - 1 if args.pin == "on" else cores)
    args.pin = plan_pinning(args.threads, args.pin)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if any(m not in MODELS for m in models):
        print(f"models are {list(MODELS)}", file=sys.stderr)
        return 2
    if not args.perf_analyzer or not (Path(args.perf_analyzer) / "perf_analyzer").exists():
        print(
            "no perf_analyzer: make one with ../shared/tools/perf_analyzer.sh DIR and give "
            "--perf-analyzer DIR",
            file=sys.stderr,
        )
        return 2
    ferry = Path(args.ferry)
    missing = ferry_missing(ferry)
    if missing:
        print(missing, file=sys.stderr)
        return 2
    print(f"machine: {cpu_summary()}")
    print(
        f"{usable_cores()} usable cores, Python {platform.python_version()}, onnxruntime "
        f"{ort.__version__}; thread budget {args.threads}; {pins_text(args.pin)}; max batch "
        f"{args.max_batch}, queue delay {args.queue_delay_ms} ms; perf_analyzer "
        f"{args.interval_ms} ms windows; load average {load_average()}",
        flush=True,
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="ferry-grpc-bench-") as tmp:
        for name in models:
            results.append((name, measure(name, Path(args.perf_analyzer), ferry, Path(tmp), args)))
    for name, rows in results:
        print()
        print(render_table(table(name, rows)))
    print(f"\nload average at the end: {load_average()} ({os.cpu_count()} logical CPUs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
