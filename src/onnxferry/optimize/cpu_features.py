"""What this machine's CPU offers that the optimization passes care about.

    x86_without_vnni()      # True on an x86 CPU without VNNI: int8 u8s8 kernels may saturate
    cpu_flags()             # frozenset({"avx2", "avx512f", ...}): /proc/cpuinfo's flags
    cpu_model()             # "AMD EPYC 9654 96-Core Processor"

Read once (cached) from the platform and Linux's /proc/cpuinfo; light to import.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

X86 = ("x86_64", "amd64", "i386", "i686")


@functools.cache
def _first_processor() -> dict[str, str]:
    """The ``key: value`` lines of /proc/cpuinfo's first processor ({} where it is absent)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (x86 ``flags``, Arm ``Features``) from Linux's /proc/cpuinfo;
    empty elsewhere."""
    info = _first_processor()
    return frozenset((info.get("flags") or info.get("Features") or "").split())


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo, else the platform's word for it)."""
    info = _first_processor()
    return info.get("model name") or platform.processor() or platform.machine() or "unknown"


def is_x86() -> bool:
    """Whether this machine's CPU is x86."""
    return platform.machine().lower() in X86


@functools.cache
def x86_without_vnni() -> bool:
    """True on an x86 CPU whose flags (Linux /proc/cpuinfo) show no VNNI instructions."""
    if not is_x86():
        return False
    flags = cpu_flags()
    return bool(flags) and not {"avx512_vnni", "avx_vnni", "amx_int8"} & flags
