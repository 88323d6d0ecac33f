"""The machine a benchmark ran on, printed with every figure (machines differ per session).

from machine import cpu_summary
print(cpu_summary())    # "AMD EPYC ..., 2 logical CPUs; avx2 yes, ..., avx512_vnni NO, ..."
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_summary() -> str:
    """The CPU and the SIMD / int8 dot-product extensions /proc/cpuinfo shows."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return f"{platform.machine()}, {os.cpu_count()} logical CPUs (no /proc/cpuinfo)"
    lines = text.splitlines()
    name = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "?")
    flags = set(next((ln for ln in lines if ln.startswith("flags")), "").split())
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8")
    shown = ", ".join(f"{f} {'yes' if f in flags else 'NO'}" for f in wanted)
    emulated = (
        os.environ.get("CPUID_KIND")
        if "cpu_kind_shim" in os.environ.get("LD_PRELOAD", "")
        else None
    )
    if emulated:
        shown += f" (EMULATED by benchmarks/cpu_kind.py {emulated}: hidden from CPUID; same cores)"
    return f"{name}, {os.cpu_count()} logical CPUs; {shown}"


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"
