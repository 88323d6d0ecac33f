"""The same model in OpenVINO's runtime (CPU plugin) and in ONNX Runtime (CPU provider), side by
side in one process, at batch 1 and 8: OpenVINO by hand and through ferry's `--provider openvino`.

    .venv/bin/python benchmarks/openvino_vs_ort.py                 # about 25 s on 2 cores
    .venv/bin/python benchmarks/openvino_vs_ort.py --seconds 0.2   # shorter rounds

Model: a small CNN built here with onnx.helper (random weights, opset 17, dynamic batch):
3x112x112 -> Conv 3x3/2 (32) -> Relu -> Conv 3x3/2 (64) -> Relu -> Conv 3x3/2 (128) -> Relu
-> Conv 3x3 (128) -> Relu -> GlobalAveragePool -> Flatten -> Gemm (10).

Variants: ``ort``: an InferenceSession on CPUExecutionProvider, default options (graph
optimization level all, ORT's default threads), ``session.run(None, feeds)``. ``ov-f32``:
``openvino.convert_model`` on the same file, ``Core.compile_model(..., "CPU",
{"INFERENCE_PRECISION_HINT": "f32"})`` (what ``ferry package --target openvino`` verifies),
one reused InferRequest, ``request.infer(feeds)``. ``ov-default``: the same without the hint
(the CPU plugin then computes in bf16 where the CPU has it: see the flags printed).
``provider-openvino``: what ``--provider openvino`` runs (``runtime.create_session`` with
``SessionConfig(provider="openvino")``: an ``ovsession.OpenVinoSession``, f32 hint, LATENCY
hint, inputs shared, outputs copied), ``session.run(None, feeds)``; ``provider-openvino-fp16``:
the same at ``precision="fp16"``. Both runtimes use their default thread counts. Each batch
size: a warm-up, then ``--rounds`` rounds of ``--seconds`` per variant, the variants
interleaved within each round; the figure is the median of the rounds' median latency.
Every variant's output is compared with ORT's (max abs).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from machine import cpu_summary, load_average

Run = Callable[[dict[str, np.ndarray]], np.ndarray]


def small_cnn(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    widths = [(3, 32, 2), (32, 64, 2), (64, 128, 2), (128, 128, 1)]
    nodes, inits, prev = [], [], "x"
    for i, (cin, cout, stride) in enumerate(widths):
        w = (rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2 / (cin * 9))).astype(np.float32)
        inits += [
            numpy_helper.from_array(w, f"w{i}"),
            numpy_helper.from_array(np.zeros(cout, np.float32), f"b{i}"),
        ]
        nodes += [
            helper.make_node(
                "Conv",
                [prev, f"w{i}", f"b{i}"],
                [f"c{i}"],
                pads=[1, 1, 1, 1],
                strides=[stride, stride],
            ),
            helper.make_node("Relu", [f"c{i}"], [f"r{i}"]),
        ]
        prev = f"r{i}"
    fc = (rng.standard_normal((10, 128)) * 0.1).astype(np.float32)
    inits += [
        numpy_helper.from_array(fc, "fc"),
        numpy_helper.from_array(np.zeros(10, np.float32), "fcb"),
    ]
    nodes += [
        helper.make_node("GlobalAveragePool", [prev], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc", "fcb"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "small_cnn",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def runners(path: Path) -> dict[str, Run]:
    import onnxruntime as ort
    import openvino as ov

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    core = ov.Core()
    model = ov.convert_model(str(path))

    def ort_run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(session.run(None, feeds)[0])

    def ov_run(config: dict[str, str]) -> Run:
        request = core.compile_model(model, "CPU", config).create_infer_request()

        def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
            return np.asarray(request.infer(feeds)[0])

        return run

    from onnxferry.model import Model
    from onnxferry.runtime import SessionConfig, create_session

    def ferry_run(precision: str) -> Run:
        config = SessionConfig(provider="openvino", precision=precision, fallback=False)
        ferry_session = create_session(Model.load(path), config)

        def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
            return np.asarray(ferry_session.run(None, feeds)[0])

        return run

    return {
        "ort": ort_run,
        "ov-f32": ov_run({"INFERENCE_PRECISION_HINT": "f32"}),
        "ov-default": ov_run({}),
        "provider-openvino": ferry_run("fp32"),
        "provider-openvino-fp16": ferry_run("fp16"),
    }


def median_latency(run: Run, feeds: dict[str, np.ndarray], seconds: float) -> float:
    times: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 5:
        start = time.perf_counter()
        run(feeds)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=0.6, help="per variant per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    import onnxruntime as ort
    import openvino as ov

    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}")
    print(cpu_summary())
    print(f"load average {load_average()}")
    print(f"onnxruntime {ort.__version__}, openvino {ov.get_version().split('-')[0]}")
    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    print(f"OpenVINO CPU capabilities: {', '.join(caps)}")
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "small_cnn.onnx"
        onnx.save(small_cnn(), str(path))
        variants = runners(path)
        print()
        print("| batch | variant | median ms | vs ort | max abs vs ort |")
        print("|---:|---|---:|---:|---:|")
        for batch in (1, 8):
            x = np.random.default_rng(batch).random((batch, 3, 112, 112), dtype=np.float32)
            feeds = {"x": x}
            want = variants["ort"](feeds)
            errors = {
                name: float(np.max(np.abs(run(feeds) - want))) for name, run in variants.items()
            }
            for run in variants.values():
                median_latency(run, feeds, 0.3)  # warm-up
            rounds: dict[str, list[float]] = {name: [] for name in variants}
            for _ in range(args.rounds):
                for name, run in variants.items():
                    rounds[name].append(median_latency(run, feeds, args.seconds))
            figures = {name: statistics.median(v) * 1e3 for name, v in rounds.items()}
            for name, ms in figures.items():
                ratio = figures["ort"] / ms
                print(f"| {batch} | {name} | {ms:.3f} | {ratio:.2f}x | {errors[name]:.2e} |")
    print("\nvs ort: ORT's median latency over the variant's (above 1: faster than ORT)")


if __name__ == "__main__":
    main()
