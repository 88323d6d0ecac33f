"""The tests whose answer depends on the CPU kind, run again as CPUs this machine is not: one
without VNNI or AMX (AVX-512 kept) and one with AVX2 only. benchmarks/cpu_kind.py hides those
extensions from CPUID and /proc/cpuinfo in a child process (Linux's CPUID faulting), so ONNX
Runtime, numpy and onnxferry all see the older kind; on the machines this project gets (VNNI,
often AMX) the branches for older CPUs would otherwise never run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
try:
    import cpu_kind
finally:
    sys.path.remove(str(ROOT / "benchmarks"))

pytestmark = [
    pytest.mark.skipif(
        not cpu_kind.has_cpuid_faulting(), reason="this CPU or kernel has no CPUID faulting"
    ),
    pytest.mark.skipif(
        not (shutil.which("gcc") or shutil.which("cc")), reason="no C compiler to build the shim"
    ),
]

CPU_DEPENDENT = (
    "tests/test_optimize_search.py::test_formats_follow_the_cpu",
    "tests/test_optimize.py::test_per_channel_candidates_use_7_bit_weights_without_vnni",
    "tests/test_optimize_quantize.py::"
    "test_per_channel_without_reduce_range_warns_on_cpus_without_vnni",
    "tests/test_doctor.py::test_cpu_flags_are_booleans_matching_proc_cpuinfo",
    "tests/test_doctor.py::test_advice_follows_from_the_flags",
)

PROBE = """
import json
from numpy._core._multiarray_umath import __cpu_features__ as cpuid
from onnxferry.doctor import doctor
from onnxferry.optimize.cpu_features import format_plan, int8_features
print(json.dumps({
    "cpuid": {k: bool(cpuid[k]) for k in ("AVX2", "AVX512F", "AVX512VNNI", "AVX512BF16")},
    "int8": int8_features(), "plan": format_plan("cpu"), "advice": doctor().result.advice,
}))
"""


def _as(kind: str, *command: str) -> subprocess.CompletedProcess[str]:
    env = cpu_kind.environment(kind)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.parametrize("kind", cpu_kind.KINDS)
def test_the_runtime_and_onnxferry_see_the_emulated_kind(kind: str) -> None:
    done = _as(kind, sys.executable, "-c", PROBE)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    avx512 = kind == "no-vnni"
    assert seen["cpuid"] == {
        "AVX2": True,
        "AVX512F": avx512,
        "AVX512VNNI": False,
        "AVX512BF16": False,
    }  # numpy asks CPUID itself, as ONNX Runtime's kernels do
    assert seen["int8"] == {"avx2": True, "avx512": avx512, "vnni": False, "amx": False}
    assert "no VNNI/AMX" in seen["plan"]["int8_static_s8s8"]
    assert bool(seen["plan"]["int8_weight_only"]) is not avx512
    assert any(line.startswith("no VNNI: per-channel and static int8") for line in seen["advice"])
    assert not any(line.startswith("AMX") for line in seen["advice"])


def test_the_cpu_dependent_tests_pass_without_vnni() -> None:
    """As a Skylake-SP (AVX-512, no VNNI): the kind whose u8s8 products can saturate. The avx2
    kind takes the same branches in these tests (what differs, the probe above checks)."""
    done = _as(
        "no-vnni", sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *CPU_DEPENDENT
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert f"{len(CPU_DEPENDENT)} passed" in done.stdout
