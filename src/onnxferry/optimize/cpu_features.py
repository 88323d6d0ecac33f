"""What this machine's CPU offers that the optimization passes care about.

    x86_without_vnni()      # True on an x86 CPU without VNNI: int8 u8s8 kernels may saturate
    int8_features()         # {"avx2": True, "avx512": True, "vnni": True, "amx": False}
    format_plan("cpu")      # per int8/int4 format: "" when fast here, else why it is skipped
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


@functools.cache
def int8_features() -> dict[str, bool]:
    """Which int8-relevant instruction sets this CPU has: avx2, avx512, vnni, amx (False
    everywhere off x86)."""
    flags = cpu_flags() if is_x86() else frozenset()
    return {
        "avx2": "avx2" in flags,
        "avx512": "avx512f" in flags,
        "vnni": bool({"avx512_vnni", "avx_vnni"} & flags),
        "amx": bool({"amx_int8", "amx_tile"} & flags),
    }


def describe_cpu() -> str:
    """One line: the model name and the int8 features, e.g. "Xeon ...: avx2, avx512, vnni"."""
    have = [name for name, on in int8_features().items() if on]
    return f"{cpu_model()}: {', '.join(have) or 'no avx2/avx512/vnni/amx'}"


def format_plan(provider: str = "cpu") -> dict[str, str]:
    """Per quantized format the search knows, "" where it is fast here, else why it is
    skipped (read from the CPU's flags and ONNX Runtime's kernels).

        format_plan()["int8_static_s8s8"]   # "" on VNNI; else why u8s8 is used instead
    """
    plan = {
        "int8_dynamic": "",
        "int8_dynamic_per_channel": "",
        "int8_static_u8s8": "",
        "int8_static_s8s8": "",
        "int4_weight_only": "",
        "int8_weight_only": "",
        "fp16": "",
    }
    if provider != "cpu":
        plan["int4_weight_only"] = f"MatMulNBits is searched on cpu only, not {provider}"
        plan["int8_weight_only"] = plan["int4_weight_only"]
        return plan
    if not is_x86():
        plan["fp16"] = "ONNX Runtime's CPU provider has no fast fp16 kernels"
        return plan
    features = int8_features()
    if not features["vnni"] and not features["amx"]:
        plan["int8_static_s8s8"] = (
            "no VNNI/AMX: ONNX Runtime's x86 kernels favour u8 activations (S8S8 runs slower)"
        )
    if not features["avx2"]:
        plan["int4_weight_only"] = "no AVX2: ONNX Runtime's MatMulNBits has no fast kernel here"
        plan["int8_weight_only"] = plan["int4_weight_only"]
    elif not (features["vnni"] or features["amx"] or features["avx512"]):
        plan["int8_weight_only"] = "no AVX-512/VNNI: 8-bit MatMulNBits falls back to fp32 math"
    plan["fp16"] = "ONNX Runtime's CPU provider has no fast fp16 kernels (fp32 compute)"
    return plan
