"""`ferry package`: a verified model, packaged for where it runs, every artifact checked by the
tool its target uses.

    report = package("model.onnx", "docker", "out/docker")
    report.result.files, report.result.checks, report.ok

Targets (``TARGETS``): each a module of this package with ``build(source, outdir, options)``
returning a ``Packaged`` (base.py). ``source`` is a model file, a Triton-layout repository or
``registry:PATH#name@alias``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..report import Report
from .base import Check, Packaged, PackageSource

TARGETS: dict[str, str] = {
    "docker": "docker",
    "k8s": "k8s",
    "kserve": "kserve",
    "observability": "observability",
    "sagemaker": "sagemaker",
    "mobile": "mobile",
    "openvino": "openvino",
    "tflite": "tflite",
    "rayjob": "rayjob",
}
"""Target name -> the module (in this package) whose ``build`` makes it."""


def package(
    source: str | Path,
    target: str,
    outdir: str | Path,
    options: Mapping[str, Any] | None = None,
) -> Report[Packaged]:
    """Package ``source`` for ``target`` into ``outdir``; the report lists every file written
    and every check run (a failed check: exit 1)."""
    if target not in TARGETS:
        known = ", ".join(sorted(TARGETS)) or "none yet"
        raise UsageError(f"unknown target {target!r}", hint=f"choose one of: {known}")
    resolved = PackageSource.resolve(source)
    module = importlib.import_module(f".{TARGETS[target]}", __name__)
    result: Packaged = module.build(resolved, Path(outdir), dict(options or {}))
    return Report("package", result, notes=list(result.notes))


__all__ = ["TARGETS", "Check", "PackageSource", "Packaged", "package"]
