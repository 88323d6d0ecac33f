"""What this machine can run, and advice: providers, CPU, cores, memory, GPUs, versions.

    report = doctor()                         # Report[Doctor]; `ferry doctor [--json]`
    report.result.providers["cpu"]            # "available"
    report.result.cpu["flags"]["VNNI"]        # True or False
    report.result.advice                      # ["no VNNI: per-channel and static int8 ...", ...]

Each execution provider of ``runtime.PROVIDERS`` is "available" or "not available: <why>": not
in this onnxruntime build (with what CUDA and TensorRT would need: nvidia-smi, libcudart,
libnvinfer), or in the build but failing to create a session on a one-node model (the error's
first line). The OpenVINO runtime route (``ovsession``) is probed in a child process, as
importing openvino here would load its native plugins into this process. CPU flags come from
``optimize.cpu_features``, cores from ``runtime.usable_cores`` (affinity capped by the cgroup
quota), memory from /proc/meminfo and ``runtime.memory_limit``, GPUs from ``nvidia-smi``, and
the versions of onnxferry's requirements (every extra but ``dev``) from the installed metadata.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from .errors import one_line
from .report import Report, Table, human_size

CPU_FLAGS: dict[str, tuple[str, ...]] = {
    "AVX2": ("avx2",),
    "AVX-512": ("avx512f",),
    "VNNI": ("avx512_vnni", "avx_vnni"),
    "AMX": ("amx_tile", "amx_int8", "amx_bf16"),
    "BF16": ("avx512_bf16", "amx_bf16", "bf16"),
    "FP16": ("avx512_fp16", "amx_fp16", "fphp"),
}
"""The CPU features that matter to ONNX Runtime's kernels, each true when /proc/cpuinfo lists
any of its flags (x86 names, and Arm's ``bf16`` / ``fphp``)."""

PROBE_TIMEOUT_S = 20.0
"""How long a child process (nvidia-smi, the OpenVINO probe) may take."""

_OPENVINO_PROBE = """
import json, openvino
core = openvino.Core()
print(json.dumps({"version": openvino.get_version(), "devices": list(core.available_devices)}))
"""


@dataclass
class Doctor:
    """What ``doctor`` found; every field is plain JSON."""

    providers: dict[str, str]
    openvino: dict[str, Any]
    cpu: dict[str, Any]
    memory: dict[str, Any]
    gpus: list[dict[str, str]]
    cuda: dict[str, Any]
    versions: dict[str, Any]
    advice: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.providers.get("cpu") == "available"

    def to_dict(self) -> dict[str, Any]:
        return {
            "providers": self.providers,
            "openvino": self.openvino,
            "cpu": self.cpu,
            "memory": self.memory,
            "gpus": self.gpus,
            "cuda": self.cuda,
            "versions": self.versions,
            "advice": self.advice,
        }

    def tables(self) -> list[Table]:
        flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in self.cpu["flags"].items())
        cpu = [
            ("model", self.cpu["model"]),
            ("machine", self.cpu["machine"]),
            ("flags", flags),
            ("logical cores", self.cpu["logical_cores"]),
            ("affinity", self.cpu["affinity_cores"]),
            ("usable cores", self.cpu["usable_cores"]),
        ]
        memory = [(k, "-" if v is None else human_size(v)) for k, v in self.memory.items()]
        ov = self.openvino
        route = (
            f"openvino {ov['version']}, devices {', '.join(ov['devices']) or 'none'}"
            if ov.get("installed") and not ov.get("error")
            else ov.get("error") or "the openvino package is not installed"
        )
        gpus = [(g["index"], g["name"], g["memory"], g["driver"]) for g in self.gpus]
        cuda = [(k, "-" if v is None else v) for k, v in self.cuda.items()]
        deps = [
            (d["name"], ", ".join(d["extras"]) or "core", d["version"] or "not installed")
            for d in self.versions["dependencies"]
        ]
        return [
            Table("execution providers", ("provider", "status"), list(self.providers.items())),
            Table("openvino runtime route", ("status",), [(route,)]),
            Table("cpu", ("field", "value"), cpu),
            Table("memory", ("field", "value"), memory),
            Table("gpus", ("index", "name", "memory", "driver"), gpus or [("-", "none", "", "")]),
            Table("cuda and tensorrt", ("field", "value"), cuda),
            Table(
                "versions",
                ("package", "extras", "version"),
                [
                    ("python", "", self.versions["python"]),
                    ("onnxferry", "", self.versions["onnxferry"]),
                    *deps,
                ],
            ),
            Table("advice", ("advice",), [(a,) for a in self.advice] or [("none",)]),
        ]


def doctor() -> Report[Doctor]:
    """Probe this machine (about a second; a few more with openvino installed)."""
    gpus = gpu_list()
    cuda = cuda_facts(gpus)
    route = openvino_route()
    found = Doctor(
        providers=provider_status(cuda, route),
        openvino=route,
        cpu=cpu_facts(),
        memory=memory_facts(),
        gpus=gpus,
        cuda=cuda,
        versions=versions(),
    )
    found.advice = advice(found)
    return Report("doctor", found)


# --- providers ---------------------------------------------------------------------------


def provider_status(
    cuda: dict[str, Any] | None = None, openvino: dict[str, Any] | None = None
) -> dict[str, str]:
    """Every provider of ``runtime.PROVIDERS``: "available", or "not available: <why>".
    openvino without onnxruntime's provider is "available through the OpenVINO runtime" when
    ``openvino`` (``openvino_route()``) found it working."""
    import onnxruntime as ort

    from .model import Model
    from .runtime import PROVIDERS

    cuda = cuda if cuda is not None else cuda_facts(gpu_list())
    built = set(ort.get_available_providers())
    model = Model.from_proto(_one_node_model())
    status: dict[str, str] = {}
    for short, full in PROVIDERS.items():
        if full in built:
            status[short] = _try_session(model, short, full)
            continue
        why = ["not in this onnxruntime build"]
        if short in ("cuda", "tensorrt"):
            if not cuda["nvidia_smi"]:
                why.append("nvidia-smi not found")
            if cuda["cudart"] is None:
                why.append("no libcudart found")
            if short == "tensorrt" and cuda["libnvinfer"] is None:
                why.append("libnvinfer not found")
            why.append("install onnxruntime-gpu" + (" and tensorrt" if short == "tensorrt" else ""))
        elif short == "openvino":
            if openvino is not None and openvino["installed"] and not openvino["error"]:
                status[short] = f"available through the OpenVINO runtime ({openvino['version']})"
                continue
            why.append("the openvino package " + _openvino_problem(openvino))
        status[short] = "not available: " + "; ".join(why)
    return status


def _openvino_problem(route: dict[str, Any] | None) -> str:
    if route is None:
        return "was not probed"
    if not route["installed"]:
        return "is not installed (pip install openvino)"
    return f"fails: {route['error']}"


def _try_session(model: Any, short: str, full: str) -> str:
    from .runtime import SessionConfig, create_session

    try:
        session = create_session(model, SessionConfig(provider=short, fallback=False))
    except Exception as e:
        return f"not available: {one_line(e, 200, line='first')}"
    active = session.get_providers()
    if not active or active[0] != full:
        return f"not available: the session ran on {', '.join(active) or 'nothing'}"
    return "available"


def _one_node_model() -> Any:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "doctor",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def openvino_route() -> dict[str, Any]:
    """The OpenVINO runtime (``ovsession``): installed, its version and devices, or why it
    cannot run; probed in a child process with a timeout."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        return {"installed": False, "version": None, "devices": [], "error": None}
    try:
        done = subprocess.run(
            [sys.executable, "-c", _OPENVINO_PROBE],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        error = f"importing openvino took over {PROBE_TIMEOUT_S:g} s"
        return {"installed": True, "version": None, "devices": [], "error": error}
    if done.returncode != 0:
        last = one_line(done.stderr, 200, line="last") or f"exit code {done.returncode}"
        return {"installed": True, "version": None, "devices": [], "error": last}
    found = json.loads(done.stdout.strip().rpartition("\n")[2])  # the probe prints JSON last
    return {"installed": True, "error": None, **found}


# --- cpu and memory ----------------------------------------------------------------------


def cpu_facts() -> dict[str, Any]:
    """The CPU's model, the flags of ``CPU_FLAGS`` and the cores this process may use."""
    from .optimize.cpu_features import cpu_flags, cpu_model
    from .runtime import usable_cores

    present = cpu_flags()
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "model": cpu_model(),
        "machine": platform.machine(),
        "flags": {name: bool(set(names) & present) for name, names in CPU_FLAGS.items()},
        "logical_cores": os.cpu_count(),
        "affinity_cores": affinity,
        "usable_cores": usable_cores(),
    }


def memory_facts() -> dict[str, int | None]:
    """Total and available memory (/proc/meminfo) and the cgroup's limit, in bytes."""
    from .runtime import meminfo, memory_limit

    info = meminfo()
    return {
        "total": info.get("MemTotal"),
        "available": info.get("MemAvailable"),
        "cgroup_limit": memory_limit(),
    }


# --- gpus, cuda, tensorrt ----------------------------------------------------------------


def gpu_list() -> list[dict[str, str]]:
    """NVIDIA GPUs as ``nvidia-smi --query-gpu`` lists them ([] without nvidia-smi)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    query = "index,name,memory.total,driver_version"
    out = _run([smi, f"--query-gpu={query}", "--format=csv,noheader"])
    gpus = []
    for line in (out or "").splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) == 4:
            gpus.append(dict(zip(("index", "name", "memory", "driver"), cells, strict=True)))
    return gpus


def cuda_facts(gpus: list[dict[str, str]]) -> dict[str, Any]:
    """The CUDA version the driver offers, and the CUDA runtime and TensorRT libraries this
    process would load (found with ``ctypes.util.find_library``, versions asked of them)."""
    import ctypes.util

    smi = shutil.which("nvidia-smi")
    driver_cuda = None
    if smi is not None and gpus:
        match = re.search(r"CUDA Version:\s*([\d.]+)", _run([smi]) or "")
        driver_cuda = match[1] if match else None
    cudart = ctypes.util.find_library("cudart")
    nvinfer = ctypes.util.find_library("nvinfer")
    built_cuda = None
    try:
        from onnxruntime.capi import build_and_package_info as info

        built_cuda = getattr(info, "cuda_version", None)
    except ImportError:
        pass
    return {
        "nvidia_smi": smi is not None,
        "driver_cuda_version": driver_cuda,
        "cudart": cudart,
        "cudart_version": _library_version(cudart, "cudaRuntimeGetVersion", _cuda_version),
        "libnvinfer": nvinfer,
        "tensorrt_version": _library_version(nvinfer, "getInferLibVersion", _tensorrt_version),
        "onnxruntime_cuda_version": built_cuda,
    }


def _library_version(library: str | None, function: str, decode: Any) -> str | None:
    """A library's version, asked of it through ctypes (None when it cannot be loaded)."""
    if library is None:
        return None
    import ctypes

    try:
        lib = ctypes.CDLL(library)
        call = getattr(lib, function)
        if function == "getInferLibVersion":
            call.restype = ctypes.c_int
            return str(decode(int(call())))
        value = ctypes.c_int(0)
        if call(ctypes.byref(value)) != 0:
            return None
        return str(decode(value.value))
    except (OSError, AttributeError):
        return None


def _cuda_version(number: int) -> str:
    """CUDA's integer version (12040) as text ("12.4")."""
    return f"{number // 1000}.{number % 1000 // 10}"


def _tensorrt_version(number: int) -> str:
    """TensorRT's integer version (100300 from 10 on, 8601 before) as text."""
    if number >= 10000:
        return f"{number // 10000}.{number // 100 % 100}.{number % 100}"
    return f"{number // 1000}.{number // 100 % 10}.{number % 100}"


def _run(command: list[str]) -> str | None:
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


# --- versions ------------------------------------------------------------------------------


def versions() -> dict[str, Any]:
    """Python, onnxferry, and every requirement of onnxferry (core and each extra but
    ``dev``) whose markers hold here: {"name", "extras", "required", "version"} (version
    None when it is not installed)."""
    from importlib import metadata

    from ._version import __version__

    found: dict[str, dict[str, Any]] = {}
    try:
        requires = metadata.requires("onnxferry") or []
    except metadata.PackageNotFoundError:
        requires = []
    for text in requires:
        parsed = _requirement(text)
        if parsed is None:
            continue
        name, spec, extra = parsed
        key = name.lower().replace("_", "-")
        entry = found.setdefault(key, {"name": name, "extras": [], "required": spec})
        if extra and extra not in entry["extras"]:
            entry["extras"].append(extra)
        if not extra:
            entry["extras"] = []
            entry["required"] = spec
    dependencies = []
    for key in sorted(found, key=lambda k: (bool(found[k]["extras"]), k)):
        entry = found[key]
        try:
            entry["version"] = metadata.version(entry["name"])
        except metadata.PackageNotFoundError:
            entry["version"] = None
        dependencies.append(entry)
    return {
        "python": platform.python_version(),
        "onnxferry": __version__,
        "platform": platform.platform(),
        "dependencies": dependencies,
    }


def _requirement(text: str) -> tuple[str, str, str] | None:
    """(name, version spec, extra or "") of a requirement whose markers hold on this machine;
    None for onnxferry's own extras, the dev extra and requirements for other platforms
    (markers are judged by ``packaging`` when it is installed, else only the extra counts)."""
    try:
        from packaging.requirements import Requirement
    except ImportError:
        found = re.match(r"\s*([A-Za-z0-9._-]+)(?:\[[^\]]*\])?\s*([^;]*)", text)
        extra_match = re.search(r"extra == ['\"]([^'\"]+)['\"]", text)
        extra = extra_match[1] if extra_match else ""
        if found is None or found[1] == "onnxferry" or extra == "dev":
            return None
        return found[1], found[2].strip(), extra
    req = Requirement(text)
    marker = str(req.marker) if req.marker is not None else ""
    match = re.search(r"extra == ['\"]([^'\"]+)['\"]", marker)
    extra = match[1] if match else ""
    if req.name == "onnxferry" or extra == "dev":
        return None
    if req.marker is not None and not req.marker.evaluate({"extra": extra}):
        return None
    return req.name, str(req.specifier), extra


# --- advice --------------------------------------------------------------------------------


def advice(found: Doctor) -> list[str]:
    """What the facts mean for ferry's choices, one line each."""
    from .optimize.cpu_features import is_x86, x86_without_vnni

    flags = found.cpu["flags"]
    lines: list[str] = []
    if x86_without_vnni():
        lines.append(
            "no VNNI: per-channel and static int8 use 7-bit weights (reduce_range), as "
            "full-range u8s8 products can saturate on this CPU; ferry optimize --auto does so "
            "by itself"
        )
    elif flags["VNNI"]:
        lines.append("VNNI: int8 (u8s8) runs full-range 8-bit weights at full speed")
    if flags["AMX"]:
        lines.append(
            "AMX: ONNX Runtime runs int8 and bf16 matrix products on AMX tiles; int8 "
            "quantization gains the most here"
        )
    if is_x86() and not flags["AVX2"]:
        lines.append("no AVX2: ONNX Runtime falls back to SSE kernels; expect slow runs")
    if not flags["FP16"]:
        lines.append(
            "no native FP16 arithmetic: an fp16 model runs with conversions on this CPU; fp16 "
            "halves the size, not the latency (keep it for GPUs)"
        )
    usable, affinity = found.cpu["usable_cores"], found.cpu["affinity_cores"]
    if affinity is not None and usable < affinity:
        lines.append(
            f"the cgroup CPU quota allows {usable} of {affinity} cores: thread pools are "
            f"capped at {usable} threads (ferry serve and bench size them by it)"
        )
    limit, total = found.memory["cgroup_limit"], found.memory["total"]
    if limit is not None and total is not None and limit < total:
        lines.append(
            f"memory is capped at {human_size(limit)} by the cgroup (the machine has "
            f"{human_size(total)}): keep a served repository's memory_budget below it"
        )
    if not found.gpus:
        lines.append("no NVIDIA GPU: the cuda and tensorrt providers are unavailable")
    elif not found.providers["cuda"].startswith("available"):
        lines.append(
            "an NVIDIA GPU is here but the cuda provider is not: pip install onnxruntime-gpu "
            "(in place of onnxruntime)"
        )
    return lines
