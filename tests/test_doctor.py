"""`ferry doctor` on this machine: its JSON, the providers, the CPU flags against
/proc/cpuinfo, advice that follows from the flags, every dependency, and its speed."""

from __future__ import annotations

import json
import platform
import re
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from onnxferry.doctor import CPU_FLAGS, advice, doctor
from onnxferry.runtime import PROVIDERS, usable_cores
from tests.helpers import Run


@pytest.fixture(scope="module")
def found() -> dict[str, Any]:
    start = time.perf_counter()
    report = doctor()
    elapsed = time.perf_counter() - start
    return {"elapsed": elapsed, "report": report, "json": json.loads(report.to_json())}


def test_it_runs_in_under_ten_seconds(found: dict[str, Any]) -> None:
    assert found["elapsed"] < 10


def test_the_cli_prints_the_json_report(ferry: Run) -> None:
    code, out, err = ferry("doctor", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["verb"] == "doctor"
    keys = {"providers", "openvino", "cpu", "memory", "gpus", "cuda", "versions", "advice"}
    assert set(data["result"]) == keys


def test_the_cli_prints_tables(ferry: Run) -> None:
    code, out, err = ferry("doctor")
    assert code == 0, err
    for title in ("execution providers", "cpu", "memory", "versions", "advice"):
        assert title in out


def test_every_provider_is_available_or_says_why(found: dict[str, Any]) -> None:
    providers = found["json"]["result"]["providers"]
    assert list(providers) == list(PROVIDERS)
    assert providers["cpu"] == "available"
    import onnxruntime as ort

    built = ort.get_available_providers()
    for short, status in providers.items():
        assert status.startswith("available") or re.match(r"not available: \S", status), status
        if PROVIDERS[short] not in built and short != "openvino":
            assert "not in this onnxruntime build" in status
    if "CUDAExecutionProvider" not in built:
        assert "install onnxruntime-gpu" in providers["cuda"]


def _cpuinfo_flags() -> set[str]:
    text = Path("/proc/cpuinfo").read_text()
    line = next((x for x in text.splitlines() if x.startswith(("flags", "Features"))), "flags\t: ")
    return set(line.split(":", 1)[1].split())


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="reads Linux's /proc/cpuinfo")
def test_cpu_flags_are_booleans_matching_proc_cpuinfo(found: dict[str, Any]) -> None:
    cpu = found["json"]["result"]["cpu"]
    flags = _cpuinfo_flags()
    assert set(cpu["flags"]) == set(CPU_FLAGS)
    for name, value in cpu["flags"].items():
        assert isinstance(value, bool)
        assert value == bool(flags & set(CPU_FLAGS[name])), name
    assert cpu["usable_cores"] == usable_cores()
    assert cpu["usable_cores"] in range(1, cpu["logical_cores"] + 1)
    assert cpu["machine"] == platform.machine()


def test_memory_is_read_from_proc_meminfo(found: dict[str, Any]) -> None:
    memory = found["json"]["result"]["memory"]
    text = Path("/proc/meminfo").read_text()
    total_kb = int(re.search(r"MemTotal:\s+(\d+) kB", text)[1])  # type: ignore[index]
    assert memory["total"] == total_kb * 1024
    assert 0 < memory["available"] <= memory["total"]
    assert memory["cgroup_limit"] is None or memory["cgroup_limit"] > 0


def test_advice_follows_from_the_flags(found: dict[str, Any]) -> None:
    result = found["report"].result
    lines = result.advice
    flags = result.cpu["flags"]
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    no_vnni = x86 and not flags["VNNI"] and "amx_int8" not in _cpuinfo_flags()
    assert (
        any(a.startswith("no VNNI: per-channel and static int8 use 7-bit weights") for a in lines)
        == no_vnni
    )
    assert any(a.startswith("AMX:") for a in lines) == flags["AMX"]
    assert any(a.startswith("no native FP16") for a in lines) == (not flags["FP16"])
    assert any(a.startswith("no NVIDIA GPU") for a in lines) == (not result.gpus)
    usable, affinity = result.cpu["usable_cores"], result.cpu["affinity_cores"]
    assert any("cgroup CPU quota" in a for a in lines) == (usable < affinity)


def test_advice_changes_with_the_facts(found: dict[str, Any]) -> None:
    """The same facts with AMX, a tighter quota and a GPU: the advice lines follow."""
    import copy

    changed = copy.deepcopy(found["report"].result)
    changed.cpu["flags"]["AMX"] = True
    changed.cpu["affinity_cores"] = changed.cpu["usable_cores"] + 2
    changed.gpus = [{"index": "0", "name": "GPU", "memory": "1 MiB", "driver": "1"}]
    changed.providers["cuda"] = "not available: not in this onnxruntime build"
    lines = advice(changed)
    assert any(a.startswith("AMX:") for a in lines)
    assert any("cgroup CPU quota allows" in a for a in lines)
    assert any("pip install onnxruntime-gpu" in a for a in lines)
    assert not any(a.startswith("no NVIDIA GPU") for a in lines)


def test_every_dependency_is_listed_with_its_version(found: dict[str, Any]) -> None:
    from packaging.requirements import Requirement

    listed = {d["name"]: d for d in found["json"]["result"]["versions"]["dependencies"]}
    for text in metadata.requires("onnxferry") or []:
        req = Requirement(text)
        marker = str(req.marker or "")
        extra = re.search(r'extra == "([^"]+)"', marker)
        wanted = not req.marker or req.marker.evaluate({"extra": extra[1] if extra else ""})
        if req.name == "onnxferry" or (extra and extra[1] == "dev") or not wanted:
            continue
        assert req.name in listed, req.name
        entry = listed[req.name]
        try:
            assert entry["version"] == metadata.version(req.name)
        except metadata.PackageNotFoundError:
            assert entry["version"] is None
        if extra:
            assert extra[1] in entry["extras"] or entry["extras"] == []
    assert listed["onnxruntime"]["extras"] == []  # a core requirement
    versions = found["json"]["result"]["versions"]
    assert versions["python"] == platform.python_version()
