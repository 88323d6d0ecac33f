"""One GPU check for `--provider cuda` and `--provider tensorrt` (fp32, fp16, int8): ferry's own
bench and compare on a CNN and an MLP beside the CPU provider, with TensorRT's engine cache.

    python3 benchmarks/gpu_check.py --install              # pip-installs PINS, then runs
    python3 benchmarks/gpu_check.py --wheelhouse .whl      # the same from wheels on disk
    python3 benchmarks/gpu_check.py --allow-missing        # what is installed (cpu rows only
                                                           # on a cpu-only onnxruntime)

Needs numpy, onnx, click and rich (the CUDA image's python3 has them) and the checkout's src/
(put on sys.path here). ``--install`` puts ``PINS`` into ``--site`` (default
/tmp/ferry-gpu-site) with pip and runs this script again with that folder first on
PYTHONPATH: onnxruntime-gpu 1.31.1 is PyPI's CUDA 13 build (its TensorRT provider links
libnvinfer.so.10 and libnvonnxparser.so.10, so TensorRT 10, not 11), and tensorrt-cu13-libs
on PyPI is a 15 kB stub (build backend ``wheel_stub``) that fetches the real libraries from
https://pypi.nvidia.com when installed, hence ``--extra-index-url``. The CUDA and cuDNN
libraries come from the nvidia-* packages already beside them (``onnxruntime.preload_dlls``);
TensorRT's are loaded from ``tensorrt_libs`` before the first session.

What it runs, for each model (``small_cnn`` from openvino_vs_ort.py, 3x112x112; an MLP
512 -> 2048 -> 2048 -> 512), each row a fresh ``bench_models`` configuration at batch 1 and
``--batch`` (default 32), ``--seconds`` each after 20 warm-up runs:
cpu fp32, cuda fp32, tensorrt fp32, tensorrt fp16 on the fp32 model, and tensorrt int8 on its
QDQ copy (ORT's ``quantize_static``, QDQ, symmetric int8 activations and per-channel weights,
8 random calibration batches: TensorRT takes symmetric int8 scales only). "cold init" is the
first session's creation (TensorRT builds its engines then), "cached init" a second session
on the same engine cache. Parity: ``compare`` of each provider's model against the fp32 model
on cpu (3 samples). The table goes to stdout and ``--out``, with the GPU, the driver and the
versions. Exit 0 when every row ran, 1 when one failed, 2 when cuda or tensorrt is missing
(unless ``--allow-missing``).

Then the device pool (``--devices``, ``devices.py``) over every visible GPU (``nvidia-smi
--list-gpus``, or ``CUDA_VISIBLE_DEVICES``): ``bench_models(devices="cuda:0,...")`` on the
MLP at ``--batch`` with 2 requests in flight per device (a row per device and one for all at
once: does throughput add up?), and serve's ``ModelExecutor`` with ``devices`` and 32
concurrent requests per device, printing the batches each device ran (does the batcher spread
them?). ``--devices-only`` runs just this part (a few seconds); without CUDA and with
``--allow-missing`` it runs on ``cpu,cpu`` so the script itself can be checked anywhere.

    python3 benchmarks/gpu_check.py --devices-only         # the pool part alone

On this workplace's lent H200 nothing can be fetched and one call carries at most 64 MiB,
while the onnxruntime-gpu cp312 wheel alone is 255 MB: run it where pip reaches PyPI and
pypi.nvidia.com, or with a wheelhouse already on the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.metadata
import itertools
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from machine import cpu_summary
from openvino_vs_ort import small_cnn

PINS = ("onnxruntime-gpu==1.31.1", "tensorrt-cu13-libs==10.16.1.11")
NVIDIA_INDEX = "https://pypi.nvidia.com"
TRT_LIBS = ("libnvinfer.so.10", "libnvinfer_plugin.so.10", "libnvonnxparser.so.10")
INSTALLED = "FERRY_GPU_CHECK_INSTALLED"
"""Set for the second run, which finds PINS installed in --site."""


@dataclass(frozen=True)
class Row:
    provider: str
    precision: str
    qdq: bool = False  # runs the QDQ copy of the model


ROWS = (
    Row("cpu", "fp32"),
    Row("cuda", "fp32"),
    Row("tensorrt", "fp32"),
    Row("tensorrt", "fp16"),
    Row("tensorrt", "int8", qdq=True),
)


def mlp(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    widths = [512, 2048, 2048, 512]
    nodes, inits, prev = [], [], "x"
    for i, (cin, cout) in enumerate(itertools.pairwise(widths)):
        w = (rng.standard_normal((cin, cout)) * np.sqrt(2 / cin)).astype(np.float32)
        inits += [
            numpy_helper.from_array(w, f"w{i}"),
            numpy_helper.from_array(np.zeros(cout, np.float32), f"b{i}"),
        ]
        out = "y" if i == len(widths) - 2 else f"r{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [f"g{i}"]))
        nodes.append(helper.make_node("Relu" if out != "y" else "Identity", [f"g{i}"], [out]))
        prev = out
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 512])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 512])],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def quantized(source: Path, target: Path, shape: Sequence[int]) -> Path:
    """A QDQ copy TensorRT takes: symmetric int8 activations, per-channel int8 weights."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            rng = np.random.default_rng(1)
            self.batches = iter(
                [{"x": rng.standard_normal((4, *shape[1:])).astype(np.float32)} for _ in range(8)]
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process, per model
    quantize_static(
        str(source),
        str(target),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )
    return target


# --- installing and loading ------------------------------------------------------------------


def install(site: Path, wheelhouse: Path | None) -> None:
    """pip-installs PINS (and their nvidia-* needs that are missing) into ``site``."""
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(site)]
    if wheelhouse is not None:
        command += ["--no-index", "--find-links", str(wheelhouse)]
    else:
        command += ["--extra-index-url", NVIDIA_INDEX]
    print("$", " ".join([*command, *PINS]), flush=True)
    subprocess.run([*command, *PINS], check=True)


def load_libraries() -> str:
    """Preload CUDA / cuDNN (onnxruntime.preload_dlls) and TensorRT's libraries; what was
    found, as one line."""
    import onnxruntime as ort

    said = []
    if hasattr(ort, "preload_dlls"):
        try:
            ort.preload_dlls()
            said.append("cuda/cudnn preloaded")
        except Exception as e:  # a missing nvidia-* package: the providers say so later
            said.append(f"preload_dlls failed: {e}")
    try:
        import tensorrt_libs  # type: ignore[import-not-found]

        folder = Path(tensorrt_libs.__file__).parent
        for name in TRT_LIBS:
            if (folder / name).exists():
                ctypes.CDLL(str(folder / name), mode=ctypes.RTLD_GLOBAL)
        said.append(f"TensorRT libraries from {folder}")
    except ImportError:
        said.append("no tensorrt_libs package (TensorRT libraries must be on the loader path)")
    return "; ".join(said)


def versions() -> dict[str, str]:
    import onnxruntime as ort

    found = {"python": platform.python_version(), "onnxruntime": ort.__version__}
    for dist in ("onnxruntime-gpu", "tensorrt-cu13-libs", "tensorrt-cu12-libs", "tensorrt"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[dist] = importlib.metadata.version(dist)
    return found


def gpu() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "no GPU (nvidia-smi not found or failed)"
    return out.replace("\n", "; ")


# --- the check -------------------------------------------------------------------------------


@dataclass
class Result:
    model: str
    row: Row
    status: str = "ok"
    p50_b1: float | None = None
    p50_bn: float | None = None
    per_s_bn: float | None = None
    cold_s: float | None = None
    cached_s: float | None = None
    max_abs: float | None = None
    cosine: float | None = None


def check(
    name: str, fp32: Path, qdq: Path, row: Row, batch: int, seconds: float, cache: Path
) -> Result:
    from onnxferry.bench import bench_models
    from onnxferry.compare import compare
    from onnxferry.errors import FerryError, one_line
    from onnxferry.model import Model
    from onnxferry.runtime import SessionConfig, create_session, session_providers

    result = Result(name, row)
    path = qdq if row.qdq else fp32
    if row.provider not in session_providers():
        result.status = f"skipped: {row.provider} is not in this onnxruntime build"
        return result
    try:
        report = bench_models(
            [path],
            providers=[row.provider],
            precision=row.precision,
            engine_cache=cache,
            batches=(1, batch),
            warmup=20,
            duration=seconds,
        )
        first, second = report.result.results
        result.p50_b1, result.p50_bn = first.p50_ms, second.p50_ms
        result.per_s_bn = second.samples_per_s
        result.cold_s = first.session_init_ms / 1e3
        config = SessionConfig(
            provider=row.provider, precision=row.precision, engine_cache=cache, fallback=False
        )
        start = time.perf_counter()
        create_session(Model.load(path), config)
        result.cached_s = time.perf_counter() - start
        parity = compare(
            fp32,
            path if row.qdq else None,
            provider="cpu",
            provider_b=row.provider,
            precision=row.precision,
            engine_cache=cache,
            samples=3,
            bisect_on_failure=False,
        )
        outputs = parity.result.outputs
        result.max_abs = max((o.max_abs or 0.0) for o in outputs)
        result.cosine = min((o.cosine if o.cosine is not None else 1.0) for o in outputs)
    except FerryError as e:
        result.status = f"error: {one_line(e, 160)}"
    return result


def table(results: Sequence[Result], batch: int) -> Iterator[str]:
    def f(value: float | None, digits: str) -> str:
        return "-" if value is None else format(value, digits)

    yield (
        f"| model | provider | precision | p50 ms b1 | p50 ms b{batch} | samples/s b{batch} "
        "| cold init s | cached init s | max abs vs cpu | cosine | status |"
    )
    yield "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"
    for r in results:
        yield (
            f"| {r.model} | {r.row.provider} | {r.row.precision}{' (QDQ)' if r.row.qdq else ''} "
            f"| {f(r.p50_b1, '.3f')} | {f(r.p50_bn, '.3f')} | {f(r.per_s_bn, ',.0f')} "
            f"| {f(r.cold_s, '.2f')} | {f(r.cached_s, '.2f')} | {f(r.max_abs, '.2e')} "
            f"| {f(r.cosine, '.6f')} | {r.status} |"
        )


def visible_gpus() -> int:
    """GPUs this process may use: CUDA_VISIBLE_DEVICES when set, else nvidia-smi's list."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return len([d for d in listed.split(",") if d.strip() and d.strip() != "-1"])
    from onnxferry.doctor import gpu_list

    return len(gpu_list())


def devices_check(folder: Path, batch: int, seconds: float, cuda: bool) -> tuple[list[str], bool]:
    """The pool part: (report lines, whether it all ran)."""
    import asyncio

    from onnxferry.bench import bench_models
    from onnxferry.errors import FerryError, one_line
    from onnxferry.model import Model
    from onnxferry.serve.config import ModelConfig
    from onnxferry.serve.executor import ModelExecutor

    gpus = visible_gpus() if cuda else 0
    devices = ",".join(f"cuda:{i}" for i in range(gpus)) if gpus else "cpu,cpu"
    lines = ["", f"device pool: --devices {devices} ({gpus} GPU(s) visible)"]
    path = folder / "pool-mlp.onnx"
    onnx.save(mlp(), str(path))
    ok = True
    try:
        report = bench_models(
            [path], devices=devices, batches=(batch,), warmup=20, duration=seconds, concurrency=2
        )
        lines += [
            "",
            f"| devices | concurrency | p50 ms b{batch} | samples/s b{batch} |",
            "|---|---:|---:|---:|",
        ]
        lines += [
            f"| {r.provider} | {r.concurrency} | {r.p50_ms:.3f} | {r.samples_per_s:,.0f} |"
            for r in report.result.results
        ]
        lines += [f"note: {n}" for n in report.notes if "every device at once" in n]
    except FerryError as e:
        lines.append(f"bench --devices: error: {one_line(e, 200)}")
        ok = False
    try:
        config = ModelConfig(
            devices=tuple(devices.split(",")), max_batch_size=batch, inline_max_ms=0.0
        )
        executor = ModelExecutor(Model.load(path), config)
        executor.warmup()
        rows = np.ones((1, 512), np.float32)
        count = 32 * max(1, gpus)

        async def drive() -> float:
            start = time.perf_counter()
            for _ in range(10):
                await asyncio.gather(*(executor.infer({"x": rows}) for _ in range(count)))
            took = time.perf_counter() - start
            await executor.close()
            return took

        took = asyncio.run(drive())
        runs = executor.device_runs()
        lines.append(
            f"serve executor, {count} concurrent requests x 10: batches per device {runs}, "
            f"{10 * count / took:,.0f} requests/s"
        )
        if len(runs) != len(devices.split(",")) or min(runs.values()) == 0:
            lines.append("serve executor: a device ran no batch")
            ok = False
    except FerryError as e:
        lines.append(f"serve --devices: error: {one_line(e, 200)}")
        ok = False
    return lines, ok


def run(args: argparse.Namespace) -> int:
    import onnxruntime as ort

    loaded = load_libraries()
    available = ort.get_available_providers()
    lines = [
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, host {platform.node()}",
        f"GPU: {gpu()}",
        f"CPU: {cpu_summary()}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()),
        f"onnxruntime providers: {', '.join(available)}",
        f"libraries: {loaded}",
    ]
    for line in lines:
        print(line, flush=True)
    missing = [
        p for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider") if p not in available
    ]
    if args.devices_only and ("CUDAExecutionProvider" in available or args.allow_missing):
        with tempfile.TemporaryDirectory(prefix="ferry-gpu-check-") as work:
            cuda = "CUDAExecutionProvider" in available
            pool, ok = devices_check(Path(work), args.batch, args.seconds, cuda)
        print("\n".join(pool), flush=True)
        if args.out:
            Path(args.out).write_text("\n".join([*lines, *pool]) + "\n")
        return 0 if ok else 1
    if missing and not args.allow_missing:
        print(
            f"gpu_check: {', '.join(missing)} not in this onnxruntime build; run with --install "
            f"(or --wheelhouse DIR) to get {' and '.join(PINS)}, or --allow-missing",
            file=sys.stderr,
        )
        return 2
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="ferry-gpu-check-") as work:
        folder = Path(work)
        cache = Path(args.engine_cache) if args.engine_cache else folder / "engines"
        models = {"cnn": (small_cnn(), (1, 3, 112, 112)), "mlp": (mlp(), (1, 512))}
        for name, (proto, shape) in models.items():
            fp32 = folder / f"{name}.onnx"
            onnx.save(proto, str(fp32))
            qdq = quantized(fp32, folder / f"{name}.qdq.onnx", shape)
            for row in ROWS:
                started = time.perf_counter()
                result = check(name, fp32, qdq, row, args.batch, args.seconds, cache)
                took = time.perf_counter() - started
                print(
                    f"  {name} {row.provider} {row.precision}: {result.status} ({took:.0f} s)",
                    flush=True,
                )
                results.append(result)
        engines = sorted(cache.rglob("*.engine")) if cache.exists() else []
        size = sum(e.stat().st_size for e in engines) / 2**20
        lines.append(f"engine cache: {len(engines)} engines, {size:.1f} MiB under {cache}")
        cuda = "CUDAExecutionProvider" in available
        pool, pool_ok = devices_check(folder, args.batch, args.seconds, cuda)
    lines += ["", *table(results, args.batch), *pool]
    text = "\n".join(lines) + "\n"
    print("\n" + "\n".join(lines[-len(results) - 3 - len(pool) :]))
    if args.out:
        Path(args.out).write_text(text)
    failed = any(r.status.startswith("error") for r in results) or not pool_ok
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--install", action="store_true", help="pip-install PINS first")
    parser.add_argument("--wheelhouse", help="install PINS from these wheels (offline)")
    parser.add_argument("--site", default="/tmp/ferry-gpu-site", help="where to install them")
    parser.add_argument("--batch", type=int, default=32, help="the larger batch size")
    parser.add_argument("--seconds", type=float, default=1.0, help="timed seconds per row")
    parser.add_argument("--engine-cache", help="TensorRT engine cache (default: a temp dir)")
    parser.add_argument("--out", help="also write the header and table to this file")
    parser.add_argument("--allow-missing", action="store_true", help="skip absent providers")
    parser.add_argument(
        "--devices-only", action="store_true", help="only the device pool part (--devices)"
    )
    args = parser.parse_args()
    if (args.install or args.wheelhouse) and not os.environ.get(INSTALLED):
        site = Path(args.site)
        install(site, Path(args.wheelhouse) if args.wheelhouse else None)
        env = {**os.environ, INSTALLED: "1"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
        return subprocess.run([sys.executable, __file__, *sys.argv[1:]], env=env).returncode
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
