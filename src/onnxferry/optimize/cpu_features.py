"""What this machine's CPU offers that the optimization passes care about.

    x86_without_vnni()      # True on an x86 CPU without VNNI: int8 u8s8 kernels may saturate

Read once (cached) from the platform and Linux's /proc/cpuinfo; light to import.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path


@functools.cache
def x86_without_vnni() -> bool:
    """True on an x86 CPU whose flags (Linux /proc/cpuinfo) show no VNNI instructions."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return False
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "").split()
    return bool(flags) and not {"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags)
