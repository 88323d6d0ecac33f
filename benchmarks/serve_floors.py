"""Where a concurrency-1 request's time goes in `ferry serve`, layer by layer, on one core.

    bash ../shared/tools/perf_analyzer.sh /work/pa      # once: perf_analyzer and its libs
    apt-get install nginx-light                         # optional: the C floor
    .venv/bin/python benchmarks/serve_floors.py [--rounds 3] [--json build/floors.json]

On serve.py's MLP (x[1,256] -> 512 -> 512 -> 10; issue 16's c=1 target: ferry's p50 at most
0.2 ms above a bare ``session.run``) or serve_frontend.py's OCR-sized CNN (``--model ocr``),
the server side pinned to the first core, the client to the second:

- **run**: a bare ``session.run`` p50, hot (back to back), after the core slept 50 us
  (``time.sleep``: what a server waiting for its next request does), and after 50 us of
  spinning (the core kept busy, no sleep).
- **in-process**: one request at a time through ASGI messages on uvloop, no sockets:
  ferry's app (``build_app`` + ``ShutdownGuard``, as ``ferry serve`` runs it) against the
  floor app (serve_backends.py: the same V2 answers, zeros, no model).
- **loopback**: perf_analyzer (C++, HTTP, binary tensors) at concurrency 1 (ferry's rows
  also at the other ``--levels``) against, from the cheapest: nginx answering canned V2
  documents (when ``nginx`` is installed: a C server, what the machine, the loopback and the
  client cost), the protocol floor (an asyncio Protocol on httptools and uvloop, canned
  answers, no ASGI), the uvicorn floor (the same answers through uvicorn's ASGI layer, as
  ferry is served), the same answers on granian (Rust HTTP, embedded in a uvloop loop) through
  ASGI and through its own RSGI interface, ferry serve, and ferry serve ``--busy-poll-us``
  (the event loop polls without sleeping for that long after each response:
  onnxferry/serve/busypoll.py). Rounds alternate the order. Each level's server CPU a request
  is measured (V2 statistics and the server's user + system time); for each canned floor,
  that CPU plus raw ORT's cost a sample at its best batch bounds what any app on that front
  could serve on the one server core, as a share of raw ORT (issue 16's c=8 target: 0.85x on
  the OCR-sized CNN).

The CPU's flags and the load average are printed; figures are medians over the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from machine import cpu_summary, load_average
from serve import (
    BACKENDS,
    Row,
    ferry_command,
    ferry_repo,
    free_port,
    median_of,
    mlp,
    pinned,
    plan_pinning,
    raw_ort,
    running,
    taskset,
)
from serve_frontend import ocr_cnn, server_cpu_per_request, stable_level

TARGET_P50_OVER_BARE_MS = 0.2
TARGET_C8_OF_RAW = 0.85  # issue 16, on the OCR-sized CNN: ferry at c=8 over raw ORT's best batch
SYSTEMS = (
    "nginx",
    "protocol",
    "uvicorn",
    "granian-asgi",
    "granian-rsgi",
    "ferry",
    "ferry-busy-poll",
)
FLOORS = ("protocol", "uvicorn", "granian-asgi", "granian-rsgi")

Asgi = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


# --- run: hot, after a sleep, after a spin -------------------------------------------------


def example_input(path: Path) -> np.ndarray:
    """A batch-1 float input for the model's one input ``x``."""
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    shape = [1, *(d.dim_value for d in dims[1:])]
    return np.random.default_rng(0).random(shape, dtype=np.float32)


def run_penalty(path: Path, repeat: int = 3000, pause_us: float = 50.0) -> dict[str, float]:
    """p50 microseconds of a batch-1 ``session.run`` back to back, after ``pause_us`` of
    sleep, and after ``pause_us`` of spinning."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feeds = {"x": example_input(path)}

    def spin() -> None:
        end = time.perf_counter_ns() + pause_us * 1e3
        while time.perf_counter_ns() < end:
            pass

    def sleep() -> None:
        time.sleep(pause_us / 1e6)

    def p50(before: Callable[[], None] | None) -> float:
        times = []
        for i in range(repeat + 300):
            if before is not None:
                before()
            start = time.perf_counter_ns()
            session.run(None, feeds)
            if i >= 300:
                times.append(time.perf_counter_ns() - start)
        return float(np.percentile(times, 50)) / 1e3

    return {"hot": p50(None), "after_sleep": p50(sleep), "after_spin": p50(spin)}


# --- in-process: ASGI messages, no sockets ------------------------------------------------


def infer_body(x: np.ndarray) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """A binary V2 infer request carrying ``x``, as tritonclient sends it."""
    head = json.dumps(
        {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                     "parameters": {"binary_data_size": x.nbytes}}],
         "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}
    ).encode()  # fmt: skip
    body = head + x.tobytes()
    headers = [
        (b"host", b"127.0.0.1"),
        (b"content-type", b"application/octet-stream"),
        (b"inference-header-content-length", b"%d" % len(head)),
        (b"content-length", b"%d" % len(body)),
    ]
    return body, headers


async def one_request(app: Asgi, name: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    """One POST /v2/models/NAME/infer through ``app``; its status."""
    delivered = False
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    path = f"/v2/models/{name}/infer"
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": headers, "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000), "state": {},
    }  # fmt: skip
    await app(scope, receive, send)
    return statuses[0]


async def _started(app: Asgi) -> Callable[[], Awaitable[None]]:
    """Run ``app``'s lifespan startup; returns the coroutine function that shuts it down."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}

    async def lifespan() -> None:
        await app(scope, inbox.get, outbox.put)

    task = asyncio.get_running_loop().create_task(lifespan())
    message = await outbox.get()
    if message["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"the app did not start: {message}")

    async def stop() -> None:
        await inbox.put({"type": "lifespan.shutdown"})
        await task

    return stop


def in_process(repo: Path, model: Path, name: str, repeat: int = 3000) -> dict[str, float]:
    """p50 microseconds of one request through ferry's ASGI app and through the floor app."""
    import uvloop

    from onnxferry.serve.server import ShutdownGuard, build_app
    from serve_backends import floor_app

    body, headers = infer_body(example_input(model))

    async def measure() -> dict[str, float]:
        ferry = ShutdownGuard(build_app(repo))
        stop = await _started(ferry)
        apps: dict[str, Asgi] = {"ferry": ferry, "floor": floor_app(str(model), name, 8)}
        times: dict[str, list[int]] = {system: [] for system in apps}
        for round_ in range(4):
            for system, app in apps.items() if round_ % 2 == 0 else reversed(apps.items()):
                for i in range(repeat // 2 + 300):
                    start = time.perf_counter_ns()
                    status = await one_request(app, name, body, headers)
                    if i >= 300:
                        times[system].append(time.perf_counter_ns() - start)
                    if status != 200:
                        raise RuntimeError(f"{system} answered {status}")
        await stop()
        return {system: float(np.percentile(t, 50)) / 1e3 for system, t in times.items()}

    return uvloop.run(measure())


# --- servers ----------------------------------------------------------------------------


NGINX_CONF = """worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  default_type application/json;
  server {{
    listen 127.0.0.1:{port};
{locations}
    location / {{ return 200 '{{}}'; }}
  }}
}}
"""


def nginx_command(workdir: Path, model: Path, name: str, port: int) -> list[str] | None:
    """nginx answering the floor's documents for batch-1 requests (infer as JSON outputs:
    nginx's ``return`` cannot hold the zero bytes of a binary answer), or None without it."""
    nginx = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None
    )
    if nginx is None:
        return None
    from serve_backends import floor_answers, session, tensors

    answer = floor_answers(str(model), name, 8)
    base = f"/v2/models/{name}"
    documents = {p: answer(p, b"", None)[1].decode() for p in (base, f"{base}/config")}
    documents[f"{base}/stats"] = answer(f"{base}/stats", b"", None)[1].decode()
    outputs = [
        {"name": n, "datatype": "FP32", "shape": [1, *shape[1:]],
         "data": [0] * int(np.prod(shape[1:]))}
        for n, _, shape in tensors(session(str(model), 1).get_outputs())
    ]  # fmt: skip
    documents[f"{base}/infer"] = json.dumps(
        {"model_name": name, "model_version": "1", "outputs": outputs}
    )
    locations = "\n".join(
        f"    location = {path} {{ return 200 '{text}'; }}" for path, text in documents.items()
    )
    home = workdir / f"nginx-{port}"
    home.mkdir(exist_ok=True)
    conf = home / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=home, port=port, locations=locations))
    return [nginx, "-c", str(conf), "-p", str(home)]


def server_command(
    system: str, workdir: Path, model: Path, name: str, repo: Path, port: int, poll_us: float
) -> list[str] | None:
    """The command line of one system's server, or None when it is not installed."""
    if system == "nginx":
        return nginx_command(workdir, model, name, port)
    if system in FLOORS:
        kind = "floor" if system == "uvicorn" else system
        cmd = [sys.executable, str(BACKENDS), kind, str(model), "--name", name]
        return [*cmd, "--port", str(port), "--threads", "1"]
    ferry = ferry_command(Path(sys.executable).with_name("ferry"), repo, port)
    return ferry if system == "ferry" else [*ferry, "--busy-poll-us", str(poll_us)]


# --- main -------------------------------------------------------------------------------

MODELS = {"mlp": mlp, "ocr": ocr_cnn}


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    pin = args.pin = plan_pinning(1, "on")
    name = args.model
    model = workdir / f"{name}.onnx"
    onnx.save(MODELS[name](), str(model))
    repo = ferry_repo(workdir, name, model, 1, 8, 0.5)
    print(f"{name}: load average {load_average()}", flush=True)
    with pinned(pin.server):
        run = run_penalty(model)
    print(f"run p50 us: {run}", flush=True)
    with pinned(pin.server):
        app = in_process(repo, model, name)
    print(f"in-process p50 us: {app}", flush=True)
    with pinned(pin.server):
        raw = max(raw_ort(model, 1, 1.0), key=lambda r: r.samples_per_s)
    print(f"raw ORT best: {raw.samples_per_s:.0f} samples/s at batch {raw.batch}", flush=True)
    rows: dict[tuple[str, int], list[Row]] = {}
    cpus: dict[tuple[str, int], list[float | None]] = {}
    for round_ in range(args.rounds):
        order = args.systems if round_ % 2 == 0 else list(reversed(args.systems))
        for system in order:
            port = free_port()
            cmd = server_command(system, workdir, model, name, repo, port, args.busy_poll_us)
            if cmd is None:
                print(f"  {system}: not installed, skipped", flush=True)
                continue
            url = f"http://127.0.0.1:{port}"
            with running(taskset(pin.server, cmd), url, name, workdir / f"{system}.log"):
                levels = args.levels if system.startswith("ferry") else args.floor_levels
                levels = (1,) if system == "nginx" else levels
                for c in levels:
                    with server_cpu_per_request(url, name) as cpu_us:
                        row = stable_level(url, name, c, args, workdir)
                    rows.setdefault((system, c), []).append(row)
                    cpus.setdefault((system, c), []).append(cpu_us[0] if cpu_us else None)
                    print(
                        f"  round {round_ + 1} {system} c={c}: p50 {row.p50_ms} ms, "
                        f"{row.throughput} infer/s{', ' + row.error if row.error else ''}"
                        f"  (load {load_average()})",
                        flush=True,
                    )
    loopback = [
        {
            "system": system,
            "concurrency": c,
            "p50_ms": median_of([r.p50_ms for r in measured]),
            "p99_ms": median_of([r.p99_ms for r in measured]),
            "infer_per_s": median_of([r.throughput for r in measured]),
            "server_cpu_us": median_of(cpus[system, c]),
            "rounds": [r.p50_ms for r in measured],
        }
        for (system, c), measured in rows.items()
    ]
    raw_best = {"batch": raw.batch, "samples_per_s": raw.samples_per_s}
    return {
        "model": name, "run_us": run, "in_process_us": app, "raw_best": raw_best,
        "loopback": loopback,
    }  # fmt: skip


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report(result: dict[str, Any]) -> str:
    run, app, raw = result["run_us"], result["in_process_us"], result["raw_best"]
    bare_ms = run["hot"] / 1e3
    raw_us = 1e6 / raw["samples_per_s"]
    lines = [
        f"{result['model']}: bare session.run p50 {run['hot']:.1f} us hot, "
        f"{run['after_sleep']:.1f} us after 50 us asleep, {run['after_spin']:.1f} us after 50 us "
        f"spinning; raw ORT's best {raw['samples_per_s']:.0f} samples/s (batch {raw['batch']}, "
        f"{raw_us:.1f} us a sample)",
        f"in-process request p50: ferry's app {app['ferry']:.1f} us, floor app "
        f"{app['floor']:.1f} us",
        "",
        "| system | c | p50 ms | p50 over bare run ms | p99 ms | infer/s | server CPU us/request "
        "| with the model's run, at most (of raw) | p50 per round |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in sorted(
        result["loopback"], key=lambda r: (r["concurrency"], SYSTEMS.index(r["system"]))
    ):
        p50, cpu = row["p50_ms"], row.get("server_cpu_us")
        over = None if p50 is None else p50 - bare_ms
        # A canned floor's CPU a request plus the model's own cost a sample at its best batch
        # bounds what any app on that front could serve on the one server core.
        ceiling = (
            f"{1 / (cpu + raw_us) * raw_us:.2f}x"
            if cpu is not None and not row["system"].startswith("ferry")
            else "-"
        )
        lines.append(
            f"| {row['system']} | {row['concurrency']} | {_fmt(p50)} | {_fmt(over)} | "
            f"{_fmt(row['p99_ms'])} | {_fmt(row['infer_per_s'], 0)} | {_fmt(cpu, 0)} | "
            f"{ceiling} | {', '.join(_fmt(v) for v in row['rounds'])} |"
        )

    def ferry(c: int, key: str) -> float | None:
        return next(
            (
                r[key]
                for r in result["loopback"]
                if r["system"] == "ferry" and r["concurrency"] == c
            ),
            None,
        )

    p50_c1, served_c8 = ferry(1, "p50_ms"), ferry(8, "infer_per_s")
    if result["model"] == "mlp" and p50_c1 is not None:
        over_c1 = p50_c1 - bare_ms
        verdict = "PASS" if over_c1 <= TARGET_P50_OVER_BARE_MS else "FAIL"
        lines.append(
            f"\ntarget (issue 16): ferry c=1 p50 - bare run <= {TARGET_P50_OVER_BARE_MS} ms: "
            f"{over_c1:.3f} ms, {verdict}"
        )
    if result["model"] == "ocr" and served_c8 is not None:
        share = served_c8 / raw["samples_per_s"]
        verdict = "PASS" if share >= TARGET_C8_OF_RAW else "FAIL"
        lines.append(
            f"\ntarget (issue 16): ferry c=8 >= {TARGET_C8_OF_RAW}x raw ORT's best batch: "
            f"{served_c8:.0f} / {raw['samples_per_s']:.0f} = {share:.2f}x, {verdict}"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="mlp")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--levels", default="1", help="perf_analyzer concurrencies, e.g. 1,8")
    parser.add_argument(
        "--floor-levels", default="1", help="the same for the canned floors (nginx: always 1)"
    )
    parser.add_argument("--interval-ms", type=int, default=3000, help="perf_analyzer window")
    parser.add_argument("--pa-dir", type=Path, default=Path("/work/pa"))
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="from " + ",".join(SYSTEMS))
    parser.add_argument(
        "--busy-poll-us", type=float, default=1000.0, help="ferry-busy-poll's --busy-poll-us"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    args.levels = [int(c) for c in args.levels.split(",") if c]
    args.floor_levels = [int(c) for c in args.floor_levels.split(",") if c]
    args.systems = [s for s in args.systems.split(",") if s]
    unknown = set(args.systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.pa_dir / "perf_analyzer").exists():
        raise SystemExit(
            f"no perf_analyzer in {args.pa_dir}: bash ../shared/tools/perf_analyzer.sh DIR"
        )
    print(cpu_summary(), flush=True)
    with tempfile.TemporaryDirectory(prefix="serve-floors-") as tmp:
        result = measure(args, Path(tmp))
    print(report(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
