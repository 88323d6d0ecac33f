"""The serve executor against bare ONNX Runtime, in one process (run by hand, not a test).

    .venv/bin/python benchmarks/serve_executor.py [--duration 2] [--rounds 3]
        [--models cnn,mlp] [--layouts default,1x2,2x1] [--delays 0.5] [--loop uvloop|asyncio]

Models: the small CNN (1x3x224x224) and 3-layer MLP (256-512-512-10) of benchmarks/serve.py,
random weights. For each instances x threads layout, in alternating rounds (the median is
printed; a shared machine is noisy):

- raw: a bare ``session.run`` loop with the layout's threads at batch 1 (p50), and the
  layout's sessions running batch 8 side by side, one Python thread each (rows/s);
- executor: ``ModelExecutor.infer`` from asyncio tasks, one row per request, at
  concurrency 1 (p50) and 8 (requests/s, mean batch size from its statistics).

Ratios: executor c=1 p50 minus raw batch-1 p50 with the same threads (the whole server's
target is <= 0.3 ms), and executor c=8 throughput over raw batch-8 throughput with the same
layout (target >= 0.9).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from collections.abc import Coroutine
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from onnxferry.model import Model
from onnxferry.runtime import usable_cores
from onnxferry.serve.config import ModelConfig
from onnxferry.serve.executor import ModelExecutor
from serve import MODELS  # benchmarks/serve.py: the models every serve benchmark uses


def session(proto: onnx.ModelProto, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def raw_latency(proto: onnx.ModelProto, x: np.ndarray, threads: int, duration: float) -> float:
    """p50 ms of a bare session.run loop."""
    sess = session(proto, threads)
    feeds = {"x": x}
    for _ in range(20):
        sess.run(None, feeds)
    lat = []
    end = time.perf_counter() + duration
    while (t0 := time.perf_counter()) < end:
        sess.run(None, feeds)
        lat.append(time.perf_counter() - t0)
    return statistics.median(lat) * 1e3


def raw_throughput(
    proto: onnx.ModelProto, x: np.ndarray, instances: int, threads: int, duration: float
) -> float:
    """rows/s of `instances` sessions looping session.run side by side, a thread each."""
    sessions = [session(proto, threads) for _ in range(instances)]
    feeds = {"x": x}
    counts = [0] * instances
    for s in sessions:
        s.run(None, feeds)
    barrier = threading.Barrier(instances)

    def loop(i: int) -> None:
        barrier.wait()
        end = time.perf_counter() + duration
        while time.perf_counter() < end:
            sessions[i].run(None, feeds)
            counts[i] += 1

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(instances)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return float(sum(counts) * x.shape[0] / (time.perf_counter() - start))


async def served(
    executor: ModelExecutor, x: np.ndarray, concurrency: int, duration: float
) -> tuple[float, float, float]:
    """(p50 ms, requests/s, mean batch size) of `concurrency` tasks looping executor.infer."""
    for _ in range(20):
        await executor.infer({"x": x})
    before = executor.statistics()
    lat: list[float] = []
    end = time.perf_counter() + duration

    async def client() -> None:
        while (t0 := time.perf_counter()) < end:
            await executor.infer({"x": x})
            lat.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    after = executor.statistics()
    runs = after["execution_count"] - before["execution_count"]
    rows = after["inference_count"] - before["inference_count"]
    return statistics.median(lat) * 1e3, len(lat) / elapsed, rows / max(runs, 1)


async def both(ex: ModelExecutor, x: np.ndarray, duration: float) -> tuple[Any, Any]:
    """Concurrency 1, then 8."""
    return await served(ex, x, 1, duration), await served(ex, x, 8, duration)


def run_loop(coro: Coroutine[Any, Any, Any], kind: str) -> Any:
    if kind == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", default="cnn,mlp")
    parser.add_argument("--layouts", default="default,1x2,2x1")
    parser.add_argument("--delays", default="0.5")
    parser.add_argument("--loop", default="uvloop", choices=["uvloop", "asyncio"])
    args = parser.parse_args()
    cores = usable_cores()
    shapes = {"cnn": (3, 224, 224), "mlp": (256,)}
    default = "x".join(map(str, ModelConfig().parallelism(cores)))
    print(
        f"usable cores: {cores}; default layout {default}; loop {args.loop}; "
        f"{args.duration:g} s per point; median of {args.rounds} rounds"
    )
    for name in args.models.split(","):
        proto = MODELS[name]()
        model = Model.from_proto(proto)
        rng = np.random.default_rng(1)
        x1 = rng.standard_normal((1, *shapes[name])).astype(np.float32)
        x8 = rng.standard_normal((8, *shapes[name])).astype(np.float32)
        print(f"\n{name}:")
        for layout in args.layouts.split(","):
            if layout == "default":
                instances, threads = ModelConfig().parallelism(cores)
            else:
                instances, threads = (int(v) for v in layout.split("x"))
            for delay in (float(d) for d in args.delays.split(",")):
                config = ModelConfig(
                    max_batch_size=8,
                    max_queue_delay_ms=delay,
                    instances=instances,
                    intra_op_threads=threads,
                )
                executor = ModelExecutor(model, config)
                executor.warmup()
                points: dict[str, list[float]] = {
                    k: [] for k in ("b1", "b8", "p1", "t8", "p8", "n8")
                }
                for _ in range(args.rounds):
                    points["b1"].append(raw_latency(proto, x1, threads, args.duration))
                    points["b8"].append(
                        raw_throughput(proto, x8, instances, threads, args.duration)
                    )
                    (p1, _, _), (p8, t8, n8) = run_loop(
                        both(executor, x1, args.duration), args.loop
                    )
                    for key, value in zip(("p1", "p8", "t8", "n8"), (p1, p8, t8, n8), strict=True):
                        points[key].append(value)
                run_loop(executor.close(), args.loop)
                m = {k: statistics.median(v) for k, v in points.items()}
                print(
                    f"  {layout:>7} = {instances}x{threads}, delay {delay:g} ms | raw: b1 p50 "
                    f"{m['b1']:.3f} ms, b8 {m['b8']:.0f} rows/s | executor: c=1 p50 "
                    f"{m['p1']:.3f} ms (+{m['p1'] - m['b1']:.3f}), c=8 {m['t8']:.0f} req/s "
                    f"(p50 {m['p8']:.3f} ms, mean batch {m['n8']:.2f}) = "
                    f"{m['t8'] / m['b8']:.2f}x raw b8"
                )


if __name__ == "__main__":
    main()
