"""How fast can a Python gRPC server answer at all? grpc.aio and grpc's thread-pool server
answering ModelInfer with a canned response, beside `ferry serve` over gRPC and over HTTP.

    bash ../shared/tools/perf_analyzer.sh /work/pa      # once: perf_analyzer and its libs
    .venv/bin/python benchmarks/serve_grpc_floor.py [--concurrency 1,8]

Each server runs on the first core (taskset) and perf_analyzer on the others, batch 1 per
request with serve.py's MLP signature (x[1,256] FP32 -> y[1,10]):

- ``aio`` / ``aio+uvloop``: a ``grpc.aio`` server (as `ferry serve --grpc-port` runs, on
  asyncio's or uvloop's loop) whose ModelInfer copies a prepared response: no decoding, no
  model; what grpc.aio costs a call on its own.
- ``sync, N threads``: grpc's ``grpc.server(ThreadPoolExecutor(N))`` with the same handler.
- ``ferry grpc`` / ``ferry http``: ``ferry serve REPO --grpc-port G`` running the MLP (max batch
  8, queue delay 0.5 ms, one thread), over each protocol.

The canned rows are ceilings for a Python gRPC front end: a real answer costs more.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from machine import cpu_summary, load_average
from onnxferry.report import Table, render_table
from serve import (
    MODELS,
    Row,
    ferry_command,
    ferry_repo,
    free_port,
    perf_analyzer,
    pins_text,
    plan_pinning,
    running,
    taskset,
)

CANNED = {"aio": [], "aio+uvloop": ["--uvloop"], "sync, 1 thread": ["--threads", "1"],
          "sync, 8 threads": ["--threads", "8"]}  # fmt: skip


def servicer() -> Any:
    """A KServe V2 servicer for the MLP's signature whose ModelInfer answers a canned copy."""
    from tritonclient.grpc import model_config_pb2 as mc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc

    canned = pb.ModelInferResponse(model_name="mlp", model_version="1")
    out = canned.outputs.add(name="y", datatype="FP32")
    out.shape.extend([1, 10])
    canned.raw_output_contents.append(np.zeros(10, np.float32).tobytes())

    class Canned(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
        def ServerMetadata(self, request: Any, context: Any) -> Any:
            return pb.ServerMetadataResponse(name="canned", version="1")

        def ServerLive(self, request: Any, context: Any) -> Any:
            return pb.ServerLiveResponse(live=True)

        def ServerReady(self, request: Any, context: Any) -> Any:
            return pb.ServerReadyResponse(ready=True)

        def ModelReady(self, request: Any, context: Any) -> Any:
            return pb.ModelReadyResponse(ready=True)

        def ModelMetadata(self, request: Any, context: Any) -> Any:
            meta = pb.ModelMetadataResponse(name="mlp", versions=["1"], platform="onnxruntime")
            meta.inputs.add(name="x", datatype="FP32").shape.extend([-1, 256])
            meta.outputs.add(name="y", datatype="FP32").shape.extend([-1, 10])
            return meta

        def ModelConfig(self, request: Any, context: Any) -> Any:
            config = mc.ModelConfig(name="mlp", max_batch_size=8)
            config.input.add(name="x", data_type=mc.TYPE_FP32).dims.extend([256])
            config.output.add(name="y", data_type=mc.TYPE_FP32).dims.extend([10])
            return pb.ModelConfigResponse(config=config)

        def ModelStatistics(self, request: Any, context: Any) -> Any:
            return pb.ModelStatisticsResponse()

        def ModelInfer(self, request: Any, context: Any) -> Any:
            answer = pb.ModelInferResponse()
            answer.CopyFrom(canned)
            answer.id = request.id
            return answer

    return Canned()


def serve_canned(port: int, threads: int | None, use_uvloop: bool) -> None:
    """Serve the canned servicer on loopback until killed: grpc.aio, or a thread pool."""
    import grpc
    from tritonclient.grpc import service_pb2_grpc

    canned = servicer()
    address = f"127.0.0.1:{port}"
    if threads:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads))
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(canned, server)
        server.add_insecure_port(address)
        server.start()
        server.wait_for_termination()
        return

    class Async:  # the same handlers, as coroutines
        def __getattr__(self, name: str) -> Any:
            method = getattr(canned, name)

            async def call(request: Any, context: Any) -> Any:
                return method(request, context)

            return call

    async def main() -> None:
        server = grpc.aio.server()
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Async(), server)
        server.add_insecure_port(address)
        await server.start()
        await server.wait_for_termination()

    if use_uvloop:
        import uvloop

        uvloop.install()
    asyncio.run(main())


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the canned server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port} after {timeout:.0f} s")


def measure(args: argparse.Namespace, workdir: Path) -> list[tuple[str, Row]]:
    pa, pin, ms = Path(args.perf_analyzer), args.pin, args.interval_ms
    rows: list[tuple[str, Row]] = []

    def level(label: str, target: str, c: int, protocol: str) -> None:
        row = perf_analyzer(pa, target, "mlp", c, ms, True, workdir, pin.client, protocol=protocol)
        if row.throughput is None:  # its 10 % check failed: 3 windows, marked
            row = perf_analyzer(
                pa, target, "mlp", c, ms, False, workdir, pin.client, protocol=protocol
            )
            row.error = row.error or "unstable: 3 windows without the 10 % check"
        rows.append((label, row))
        print(f"  {label} c={c}: {_text(row)}", flush=True)

    for label, flags in CANNED.items():
        port = free_port()
        cmd = [sys.executable, str(Path(__file__).resolve()), "serve", "--port", str(port)]
        proc = subprocess.Popen(
            taskset(pin.server, cmd + flags), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        try:
            _wait_for_port(port, proc)
            for c in args.levels:
                level(label, f"127.0.0.1:{port}", c, "grpc")
        finally:
            proc.kill()
            proc.wait()
    path = workdir / "mlp.onnx"
    onnx.save(MODELS["mlp"](), str(path))
    repo = ferry_repo(workdir, "mlp", path, args.threads, 8, 0.5)
    port, grpc_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [*ferry_command(Path(args.ferry), repo, port), "--grpc-port", str(grpc_port)]
    with running(taskset(pin.server, cmd), url, "mlp", workdir / "ferry.log"):
        for c in args.levels:
            level("ferry grpc", f"127.0.0.1:{grpc_port}", c, "grpc")
            level("ferry http", url, c, "http")
    return rows


def _text(row: Row) -> str:
    if row.throughput is None:
        return f"FAILED {row.error}"
    return f"{row.throughput:.1f} infer/s, p50 {row.p50_ms:.3f} ms"


def table(rows: list[tuple[str, Row]]) -> Table:
    columns = ["server", "c", "infer/s", "p50 ms", "p99 ms", "server us/req"]
    body: list[list[object]] = []
    for label, r in rows:
        if r.throughput is None:
            body.append([label, r.concurrency, f"FAILED: {r.error}", "", "", ""])
            continue
        # At c > 1 the server's one core is kept busy: its time per request.
        per_request: object = round(1e6 / r.throughput) if r.concurrency > 1 else ""
        body.append([label, r.concurrency, round(r.throughput, 1), round(r.p50_ms or 0, 3),
                     round(r.p99_ms or 0, 3), per_request])  # fmt: skip
    return Table("gRPC floor: canned answers against ferry serve, MLP, batch 1", columns, body)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    sub = p.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="(internal) one canned server")
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--threads", dest="pool", type=int, help="a thread-pool server, N threads")
    serve.add_argument("--uvloop", action="store_true")
    p.add_argument("--concurrency", default="1,8")
    p.add_argument("--interval-ms", type=int, default=3000, help="perf_analyzer's window")
    p.add_argument(
        "--perf-analyzer", default=os.environ.get("FERRY_PERF_ANALYZER", "/work/pa"),
        help="dir with perf_analyzer and lib/ (env FERRY_PERF_ANALYZER; default /work/pa)",
    )  # fmt: skip
    p.add_argument("--ferry", default=str(Path(sys.executable).with_name("ferry")))
    args = p.parse_args(argv)
    args.levels = tuple(int(c) for c in args.concurrency.split(","))
    args.threads = 1
    if args.command is None:
        args.pin = plan_pinning(args.threads, "on")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "serve":
        serve_canned(args.port, args.pool, args.uvloop)
        return 0
    if not (Path(args.perf_analyzer) / "perf_analyzer").exists():
        print("no perf_analyzer: run ../shared/tools/perf_analyzer.sh DIR", file=sys.stderr)
        return 2
    print(f"machine: {cpu_summary()}")
    print(f"{pins_text(args.pin)}; load average {load_average()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="ferry-grpc-floor-") as tmp:
        rows = measure(args, Path(tmp))
    print()
    print(render_table(table(rows)))
    print(f"\nload average at the end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
