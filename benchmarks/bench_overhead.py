"""Overhead of `ferry bench` against a hand-written `session.run` loop, in one process.

    .venv/bin/python benchmarks/bench_overhead.py

On a tiny model (a 1x64 @ 64x64 MatMul + Relu, microseconds per run, so any overhead in the
timed region shows) it alternates A (hand loop) and B (onnxferry.bench.bench) several times
to cancel drift and compares medians of p50. Targets: ferry/hand p50 ratio within 0.95..1.05,
and two consecutive ferry runs within 5% of each other. Exit 1 on FAIL.
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from onnxferry.bench import bench
from onnxferry.model import Model

ITERATIONS = 5000
WARMUP = 200
ROUNDS = 7
THREADS = 1
TOLERANCE = 0.05


def tiny_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 64])],
        [w],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    onnx.checker.check_model(proto)
    return proto


def hand_loop(proto: onnx.ModelProto) -> float:
    """What a user writes by hand; returns p50 in ms."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    sess = ort.InferenceSession(
        proto.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"]
    )
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)}
    for _ in range(WARMUP):
        sess.run(None, feeds)
    lat: list[float] = []
    for _ in range(ITERATIONS):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        lat.append(time.perf_counter() - t0)
    return float(np.percentile(lat, 50)) * 1e3


def ferry(model: Model) -> float:
    report = bench([model], threads=(THREADS,), warmup=WARMUP, iterations=ITERATIONS)
    return report.result.results[0].p50_ms


def verdict(name: str, ratio: float) -> bool:
    ok = 1 - TOLERANCE <= ratio <= 1 + TOLERANCE
    print(
        f"{'PASS' if ok else 'FAIL'} {name}: {ratio:.3f} (target {1 - TOLERANCE}..{1 + TOLERANCE})"
    )
    return ok


def main() -> int:
    proto = tiny_model()
    model = Model.from_proto(proto)
    hand: list[float] = []
    ours: list[float] = []
    for _ in range(ROUNDS):
        hand.append(hand_loop(proto))
        ours.append(ferry(model))
    # two consecutive ferry runs, back to back
    first, second = ferry(model), ferry(model)

    print(
        f"model: MatMul 1x64 @ 64x64 + Relu, threads={THREADS}, {ITERATIONS} iterations, "
        f"{WARMUP} warmup, {ROUNDS} rounds A/B"
    )
    print("hand p50 per round (us):  " + " ".join(f"{v * 1e3:.2f}" for v in hand))
    print("ferry p50 per round (us): " + " ".join(f"{v * 1e3:.2f}" for v in ours))
    h, f = statistics.median(hand), statistics.median(ours)
    print(f"hand-written loop p50: {h * 1e3:.2f} us (median of rounds)")
    print(f"ferry bench p50:       {f * 1e3:.2f} us (median of rounds)")
    print(f"consecutive ferry runs p50: {first * 1e3:.2f} us, {second * 1e3:.2f} us")
    ok = verdict("ferry/hand p50 ratio", f / h)
    ok &= verdict("ferry run 2 / run 1 p50 ratio", second / first)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
