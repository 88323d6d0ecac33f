"""`ferry batch` throughput: the local engine against a hand-written loop of ``session.run`` over
pre-loaded batches of the same size, same model, same run; then the Ray engine per worker, the
cost of moving a batch through Ray's object store, and a scaling estimate for N nodes.

    .venv/bin/python benchmarks/batch_throughput.py                # about 3 minutes here
    .venv/bin/python benchmarks/batch_throughput.py --rows 65536 --batch-size 256 --no-ray
    .venv/bin/python benchmarks/batch_throughput.py --ray-only     # the Ray figures alone

The model is an MLP 256-1024-1024-16 (2.6 MFLOP a row), so the figure is about the pipeline's
overhead, not about a model too small to measure. The input is an .npy of ``--rows`` rows
(1 KiB each) in the page cache (read once before timing); the loop gets the same rows already
sliced into batches in memory. Rounds alternate loop and engine, so load changes on a shared
machine hit both; the ratio is of medians. The engine's time is the summary's ``seconds``
(after its sessions exist: reading, running, writing Parquet, fsync and rename of every shard);
the whole call (model load and sessions too) is printed beside it.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.helpers
from tests.helpers import deep_mlp, save

from machine import cpu_summary, load_average
from onnxferry.batch import batch
from onnxferry.runtime import usable_cores

WIDTH, HIDDEN, OUT = 256, 1024, 16


def mlp(path: Path) -> Path:
    return save(deep_mlp(WIDTH, HIDDEN, OUT), path)


def hand_loop(model: Path, x: np.ndarray, batch_size: int) -> float:
    """Rows/s of ``session.run`` over pre-loaded batches (ONNX Runtime's default threads)."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    batches = [x[i : i + batch_size] for i in range(0, len(x), batch_size)]
    session.run(None, {"x": batches[0]})  # warm-up, as the engine's first batch
    start = time.perf_counter()
    for b in batches:
        session.run(None, {"x": b})
    return len(x) / (time.perf_counter() - start)


def threaded_loop(model: Path, x: np.ndarray, batch_size: int, sessions: int) -> float:
    """Rows/s of ``sessions`` threads, each with a one-thread session, taking pre-loaded
    batches from one shared iterator: the engine's layout without reading or writing."""
    import threading

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    pool = [
        ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        for _ in range(sessions)
    ]
    batches = [x[i : i + batch_size] for i in range(0, len(x), batch_size)]
    for session in pool:
        session.run(None, {"x": batches[0]})
    todo = iter(batches)
    lock = threading.Lock()

    def work(session: ort.InferenceSession) -> None:
        while True:
            with lock:
                b = next(todo, None)
            if b is None:
                return
            session.run(None, {"x": b})

    threads = [threading.Thread(target=work, args=(s,)) for s in pool]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(x) / (time.perf_counter() - start)


def engine(
    model: Path, data: Path, out: Path, batch_size: int, workers: int | None, threads: int | None
) -> tuple[float, float]:
    """(rows/s by the summary's seconds, rows/s of the whole call) of the local engine."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    summary = batch(model, data, out, batch_size=batch_size, workers=workers, threads=threads)
    whole = time.perf_counter() - start
    return summary.rows_per_s, summary.rows / whole


def ray_figures(model: Path, data: Path, tmp: Path, batch_size: int, x: np.ndarray) -> None:
    """Per worker: the fixed cost of a job (actors start, load the model) and the marginal
    rows/s, from a small and the full input (two points: seconds = fixed + rows / rate)."""
    import ray

    small = tmp / "small.npy"
    np.save(small, x[: 2 * batch_size])
    ray.init(num_cpus=usable_cores(), include_dashboard=False, log_to_driver=False)
    try:
        for workers in (1, 2):
            seconds = []
            for source in (small, data):
                out = tmp / f"ray{workers}"
                shutil.rmtree(out, ignore_errors=True)
                s = batch(model, source, out, engine="ray", batch_size=batch_size,
                          workers=workers, shard_rows=batch_size * 16)  # fmt: skip
                seconds.append(s.seconds)
            rate = (len(x) - 2 * batch_size) / (seconds[1] - seconds[0])
            print(f"ray, {workers} worker(s) x 1 thread: {len(x) / seconds[1]:,.0f} rows/s for "
                  f"the whole job ({seconds[1]:.1f} s); fixed {seconds[0]:.1f} s, marginal "
                  f"{rate:,.0f} rows/s ({rate / workers:,.0f} per worker)")  # fmt: skip

        @ray.remote  # type: ignore[untyped-decorator]  # ray is not followed (pyproject)
        def make(n: int) -> np.ndarray:
            return np.ones(n, np.uint8)

        size = 64 << 20
        ray.get(make.remote(1024))
        start = time.perf_counter()
        for _ in range(5):
            ray.get(make.remote(size))
        per_s = 5 * size / (time.perf_counter() - start)
        print(f"object store, a 64 MiB block from a worker to the driver: {per_s / 1e9:.2f} GB/s")
    finally:
        ray.shutdown()


def _cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=262144)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--ray-only", action="store_true", help="skip the local rounds")
    args = parser.parse_args()
    print(cpu_summary())
    print(f"usable cores {usable_cores()}, load average {load_average()}, onnxruntime "
          f"{ort.__version__}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")  # fmt: skip
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        model = mlp(tmp / "mlp.onnx")
        x = np.random.default_rng(1).standard_normal((args.rows, WIDTH)).astype(np.float32)
        np.save(tmp / "x.npy", x)
        np.load(tmp / "x.npy")  # in the page cache, as the loop's rows are in memory
        cores = usable_cores()
        runners: dict[str, Callable[[], tuple[float, float]]] = {
            "loop: one session, ORT's threads": lambda: (hand_loop(model, x, bs), 0.0),
            f"loop: {cores} threads x one-thread sessions": lambda: (
                threaded_loop(model, x, bs, cores),
                0.0,
            ),
            f"engine default ({cores} x 1)": lambda: engine(model, data, out, bs, None, None),
            f"engine 1 x {cores}": lambda: engine(model, data, out, bs, 1, cores),
        }
        bs, data, out = args.batch_size, tmp / "x.npy", tmp / "out"
        rates: dict[str, list[float]] = {k: [] for k in runners}
        whole: dict[str, list[float]] = {k: [] for k in runners}
        cpu: dict[str, list[float]] = {k: [] for k in runners}
        for _ in range(0 if args.ray_only else args.rounds):  # one of each, back to back
            for label, run in runners.items():
                before = _cpu_s()
                rate, whole_rate = run()
                cpu[label].append(_cpu_s() - before)
                rates[label].append(rate)
                whole[label].append(whole_rate or rate)
        print(f"\n{args.rows} rows x {WIDTH} float32, batch {bs}, {args.rounds} rounds")
        labels = list(runners)
        for label in labels if not args.ray_only else []:
            line = f"{label}: median {statistics.median(rates[label]):,.0f} rows/s"
            for base in labels[:2]:
                if label in labels[:2]:
                    break
                paired = [a / b for a, b in zip(rates[label], rates[base], strict=True)]
                line += f"; to {base.split(':')[1].strip()}: {statistics.median(paired):.3f}"
            cpu_ratio = statistics.median(cpu[label]) / statistics.median(cpu[labels[1]])
            line += f"; CPU s {statistics.median(cpu[label]):.2f} ({cpu_ratio:.3f} of the 2nd loop)"
            line += f"; runs {', '.join(f'{v:,.0f}' for v in rates[label])}"
            if label not in labels[:2]:
                line += f"; whole call median {statistics.median(whole[label]):,.0f} rows/s"
            print(line)
        if not args.no_ray:
            print()
            ray_figures(model, tmp / "x.npy", tmp, args.batch_size, x)
        row_in, row_out = WIDTH * 4, OUT * 4 + 8
        print(f"\nbytes a row moves: {row_in} in, {row_out} out (with its row number)")


if __name__ == "__main__":
    main()
