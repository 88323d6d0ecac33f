"""`ferry serve` at concurrency 8: tensors in the HTTP body vs in system shared memory, vs raw ORT.

    bash ../shared/tools/perf_analyzer.sh /work/pa      # once: perf_analyzer and its libs
    .venv/bin/python benchmarks/serve_shm.py --perf-analyzer /work/pa [--rounds 3]
    .venv/bin/python benchmarks/serve_shm.py --model ocr --pin on   # issue 16's c=8 target

benchmarks/serve.py's small CNN (``cnn``: x[batch,3,224,224], 602 KB a sample) or
serve_frontend.py's PaddleOCR-shaped classifier (``ocr``: x[batch,3,48,192], 110 KB) served by one
``ferry serve REPO --port P --shared-memory system`` (its ferry.toml: dynamic batching,
instances x threads = the thread budget), driven by perf_analyzer over HTTP at concurrency 8,
batch 1 per request: once with binary tensors in the request body, once with
``--shared-memory system`` (perf_analyzer maps /dev/shm regions, registers them, and sends
only the JSON header; the server reads the input from the region and writes the output
into it). Raw ONNX Runtime (``session.run`` in this process, batch 1..32, in every round
while the server idles) gives the ceiling: the best samples/s over batch sizes. Rounds
alternate body and shared memory so a change of load on a shared machine hits both; medians
are reported with the load average before and after, and the CPU's flags first. ``--pin on``
puts the server and raw ORT on the first ``--threads`` cores (default: all but one) and
perf_analyzer on the rest, as serve_frontend.py does, so the client's CPU does not count
against the server.

perf_analyzer's flag goes through a wrapper script in a temporary directory, so
serve.py's runner (command line, CSV parsing, time limit) is used unchanged.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import onnx

from machine import cpu_summary, load_average
from onnxferry.report import Table, render_table
from onnxferry.runtime import usable_cores
from serve import (
    MODELS,
    RawRow,
    Row,
    ferry_command,
    ferry_missing,
    ferry_repo,
    free_port,
    median_of,
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
from serve_frontend import ocr_cnn

MODES = ("body", "shared memory")
SHM_MODELS = {"cnn": MODELS["cnn"], "ocr": ocr_cnn}


def shm_analyzer(pa_dir: Path, workdir: Path) -> Path:
    """A directory whose ``perf_analyzer`` runs the real one with ``--shared-memory system``."""
    wrapped = workdir / "pa-shm"
    wrapped.mkdir(exist_ok=True)
    (wrapped / "lib").symlink_to((pa_dir / "lib").resolve())
    script = wrapped / "perf_analyzer"
    real = (pa_dir / "perf_analyzer").resolve()
    script.write_text(f'#!/bin/sh\nexec "{real}" "$@" --shared-memory system\n')
    script.chmod(0o755)
    return wrapped


def measure(
    args: argparse.Namespace, workdir: Path
) -> tuple[dict[str, list[Row]], list[tuple[float, int]]]:
    """perf_analyzer rows per mode over the rounds; raw ORT's best (samples/s, batch) per
    round (measured in the round, the server idle, so a change of load hits it too)."""
    name = args.model
    path = workdir / f"{name}.onnx"
    onnx.save(SHM_MODELS[name](), str(path))
    raw_best: list[tuple[float, int]] = []
    pa_dir = Path(args.perf_analyzer)
    dirs = {"body": pa_dir, "shared memory": shm_analyzer(pa_dir, workdir)}
    repo = ferry_repo(workdir, name, path, args.threads, args.max_batch, args.queue_delay_ms)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [*ferry_command(Path(args.ferry), repo, port), "--shared-memory", "system"]
    rows: dict[str, list[Row]] = {mode: [] for mode in MODES}
    with running(taskset(args.pin.server, cmd), url, name, workdir / "ferry.log"):
        for round_ in range(args.rounds):
            with pinned(args.pin.server):
                best = max(raw_ort(path, args.threads, args.raw_seconds), key=_samples)
            raw_best.append((best.samples_per_s, best.batch))
            print(
                f"  round {round_ + 1}, raw ORT: best {best.samples_per_s:.1f} samples/s at "
                f"batch {best.batch}",
                flush=True,
            )
            for mode in MODES if round_ % 2 == 0 else reversed(MODES):
                c, ms = args.concurrency, args.interval_ms
                cpus = args.pin.client
                row = perf_analyzer(dirs[mode], url, name, c, ms, True, workdir, cpus)
                if row.throughput is None:  # its 10 % check failed: 3 windows, marked
                    row = perf_analyzer(dirs[mode], url, name, c, ms, False, workdir, cpus)
                    row.error = row.error or "unstable: 3 windows without the 10 % check"
                row.system = mode
                rows[mode].append(row)
                print(f"  round {round_ + 1}, {mode}: {row_text(row)}", flush=True)
    return rows, raw_best


def _samples(row: RawRow) -> float:
    return row.samples_per_s


def summary(rows: dict[str, list[Row]], raw: list[tuple[float, int]], c: int, name: str) -> Table:
    columns = ["path", "runs", "median infer/s", "vs raw ORT", "median p50 ms", "median p99 ms",
               "batch formed"]  # fmt: skip
    body: list[list[object]] = []
    raw_best = statistics.median(samples for samples, _ in raw)
    for mode in MODES:
        ok = [r for r in rows[mode] if r.throughput is not None]
        tput = median_of([r.throughput for r in ok])
        body.append(
            [
                mode,
                f"{len(ok)}/{len(rows[mode])}",
                "" if tput is None else round(tput, 1),
                "" if tput is None else f"{tput / raw_best:.2f}x",
                _round(median_of([r.p50_ms for r in ok])),
                _round(median_of([r.p99_ms for r in ok])),
                _round(median_of([r.server_batch for r in ok]), 2),
            ]
        )
    batches = ",".join(str(batch) for _, batch in raw)
    body.append(
        [f"raw ORT (best batch: {batches})", len(raw), round(raw_best, 1), "1.00x", "", "", ""]
    )
    return Table(f"{name}, ferry serve at concurrency {c}, batch 1 per request", columns, body)


def _round(value: float | None, digits: int = 3) -> object:
    return "" if value is None else round(value, digits)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--model", choices=sorted(SHM_MODELS), default="cnn")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--threads", type=int, help="ORT thread budget (default: usable cores, - 1 pinned)"
    )
    p.add_argument("--pin", choices=["auto", "on", "off"], default="off")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--queue-delay-ms", type=float, default=0.5)
    p.add_argument("--interval-ms", type=int, default=3000, help="perf_analyzer's window")
    p.add_argument("--raw-seconds", type=float, default=1.0, help="raw ORT seconds per batch")
    p.add_argument(
        "--perf-analyzer",
        default=os.environ.get("FERRY_PERF_ANALYZER", "/work/pa"),
        help="dir with perf_analyzer and lib/ (env FERRY_PERF_ANALYZER; default /work/pa)",
    )
    p.add_argument("--ferry", default=str(Path(sys.executable).with_name("ferry")))
    args = p.parse_args(argv)
    cores = usable_cores()
    args.threads = args.threads or max(1, cores - 1 if args.pin == "on" else cores)
    args.pin = plan_pinning(args.threads, args.pin)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not (Path(args.perf_analyzer) / "perf_analyzer").exists():
        print(
            "no perf_analyzer: make one with ../shared/tools/perf_analyzer.sh DIR and give "
            "--perf-analyzer DIR",
            file=sys.stderr,
        )
        return 2
    missing = ferry_missing(Path(args.ferry))
    if missing:
        print(missing, file=sys.stderr)
        return 2
    if not Path("/dev/shm").is_dir():
        print("no /dev/shm on this host: system shared memory cannot be measured", file=sys.stderr)
        return 2
    print(f"machine: {cpu_summary()}")
    print(settings_line(args, pins=pins_text(args.pin)), flush=True)
    with tempfile.TemporaryDirectory(prefix="ferry-shm-bench-") as tmp:
        rows, raw = measure(args, Path(tmp))
    print()
    print(render_table(summary(rows, raw, args.concurrency, args.model)))
    body = median_of([r.throughput for r in rows["body"]])
    shared = median_of([r.throughput for r in rows["shared memory"]])
    if body and shared:
        print(f"\nshared memory / body: {shared / body:.2f}x")
    print(f"load average at the end: {load_average()} ({os.cpu_count()} logical CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
