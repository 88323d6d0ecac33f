"""Run a benchmark as if on an older x86 CPU kind: CPUID and /proc/cpuinfo hide VNNI and AMX
(``no-vnni``, like a Skylake-SP) or every AVX-512 extension too (``avx2``, like a Haswell or
an AMD Zen 1-3), so ONNX Runtime picks the kernels it would pick there (issue 18).

    .venv/bin/python benchmarks/cpu_kind.py check     # do the runtime's kernels follow the mask?
    .venv/bin/python benchmarks/cpu_kind.py avx2 -- .venv/bin/python benchmarks/optimize_v2.py
    .venv/bin/python benchmarks/cpu_kind.py no-vnni -- .venv/bin/python benchmarks/optimize_v2.py

How: ``cpu_kind_shim.c`` (compiled here with gcc, cached by its hash) is preloaded; it turns on
Linux's CPUID faulting (``arch_prctl(ARCH_SET_CPUID)``, the ``cpuid_fault`` flag) and answers
each CPUID with the hidden bits cleared, and serves /proc/cpuinfo without their flags, so the
runtime's dispatch (MLAS reads CPUID), numpy's and onnxferry's reading of /proc/cpuinfo all
agree. What it cannot change: the cores stay this machine's microarchitecture (clock, caches,
the cost of each instruction), so an emulated kind's figures are its kernels' figures on these
cores, not a real older CPU's; ``check`` shows the kernels that changed.

``check`` times an int8 dynamic-quantized MatMul (BERT-base's FFN shape, 128 tokens) and its
fp32 original under each kind, in child processes, and prints what numpy, onnxferry and the
timings saw. Exit 2 where the machine has no CPUID faulting or no gcc.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

KINDS = ("no-vnni", "avx2")
SHIM_SOURCE = Path(__file__).with_name("cpu_kind_shim.c")


def shim_library() -> Path:
    """The compiled shim (built once per source hash under ~/.cache/onnxferry-bench)."""
    source = SHIM_SOURCE.read_bytes()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "onnxferry-bench"
    library = cache / f"cpu_kind_shim-{hashlib.sha256(source).hexdigest()[:12]}.so"
    if library.exists():
        return library
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise SystemExit("cpu_kind: no C compiler (gcc or cc) on PATH; install gcc")
    cache.mkdir(parents=True, exist_ok=True)
    partial = library.with_suffix(f".{os.getpid()}.tmp")
    subprocess.run(
        [compiler, "-O2", "-shared", "-fPIC", "-o", str(partial), str(SHIM_SOURCE), "-ldl"],
        check=True,
    )
    partial.replace(library)
    return library


def environment(kind: str) -> dict[str, str]:
    """os.environ plus what makes a child process see ``kind``."""
    preload = " ".join(filter(None, [str(shim_library()), os.environ.get("LD_PRELOAD", "")]))
    return {**os.environ, "LD_PRELOAD": preload, "CPUID_KIND": kind}


def has_cpuid_faulting() -> bool:
    try:
        return "cpuid_fault" in Path("/proc/cpuinfo").read_text(errors="replace").split()
    except OSError:
        return False


_PROBE = r"""
import statistics, tempfile
from pathlib import Path
import numpy as np, onnx, onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import quantize_dynamic
from numpy._core._multiarray_umath import __cpu_features__ as numpy_features
from onnxferry.measure import measure
from onnxferry.optimize.cpu_features import int8_features

rng = np.random.default_rng(0)
weight = numpy_helper.from_array(rng.standard_normal((768, 3072)).astype(np.float32), "w")
graph = helper.make_graph(
    [helper.make_node("MatMul", ["x", "w"], ["y"])], "ffn",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [128, 768])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [128, 3072])], [weight])
folder = Path(tempfile.mkdtemp())
onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), folder / "f.onnx")
quantize_dynamic(folder / "f.onnx", folder / "q.onnx")
feeds = {"x": rng.standard_normal((128, 768)).astype(np.float32)}

def p50_ms(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return 1e3 * statistics.median(measure(session, feeds, warmup=5, iterations=40))

seen = ",".join(k for k in ("AVX2", "AVX512F", "AVX512VNNI", "AVX512BF16") if numpy_features[k])
ferry = ",".join(k for k, v in int8_features().items() if v)
fp32, int8 = p50_ms(folder / "f.onnx"), p50_ms(folder / "q.onnx")
print(f"{seen}|{ferry}|{fp32:.3f}|{int8:.3f}")
"""


def check() -> int:
    """Time the probe under the machine's own kind and each emulated one; print a table."""
    sys.path.insert(0, str(Path(__file__).parent))
    from machine import cpu_summary

    print(cpu_summary())
    if not has_cpuid_faulting():
        print("cpu_kind: this CPU or kernel has no CPUID faulting (no cpuid_fault flag)")
        return 2
    source = Path(__file__).resolve().parents[1] / "src"
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        probe = Path(scratch) / "probe.py"
        probe.write_text(_PROBE)
        for kind in ("native", *KINDS):
            env = dict(os.environ) if kind == "native" else environment(kind)
            env["PYTHONPATH"] = str(source)
            done = subprocess.run(
                [sys.executable, str(probe)], env=env, capture_output=True, text=True
            )
            if done.returncode != 0:
                print(f"{kind}: the probe failed:\n{done.stderr.strip()}")
                return 1
            rows.append((kind, *done.stdout.strip().splitlines()[-1].split("|")))
    print("\nint8 dynamic MatMul 128x768 @ 768x3072, one thread, p50 of 40 runs")
    print("| kind | numpy sees | onnxferry sees | fp32 ms | int8 ms | int8 speedup |")
    print("|---|---|---|---:|---:|---:|")
    for kind, numpy_seen, ferry_seen, fp32, int8 in rows:
        speedup = float(fp32) / float(int8)
        print(f"| {kind} | {numpy_seen} | {ferry_seen} | {fp32} | {int8} | {speedup:.2f}x |")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=("check", *KINDS))
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = parser.parse_args(argv)
    if args.kind == "check":
        return check()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    if not has_cpuid_faulting():
        print("cpu_kind: this CPU or kernel has no CPUID faulting (no cpuid_fault flag)")
        return 2
    return subprocess.run(command, env=environment(args.kind)).returncode


if __name__ == "__main__":
    sys.exit(main())
