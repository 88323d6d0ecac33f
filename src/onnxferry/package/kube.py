"""What the Kubernetes-shaped targets (k8s, kserve, observability) share: the measured
footprint that sizes them, names, and YAML text (their ``--set`` options: base.Options).

    footprint = measure_footprint(PackageSource.resolve("model.onnx"))
    footprint.load_s, footprint.peak_rss_bytes, footprint.memory_request_mib
    text = to_yaml({"kind": "ConfigMap", "data": {"ferry.toml": "max_batch_size = 8"}})
    k8s_name("My_Model.v2"), default_image(PackageSource.resolve("model.onnx"))

``to_yaml`` writes block-style YAML (PyYAML is not a dependency): strings are plain only when
they cannot read as anything else, otherwise JSON-quoted (a JSON string is a YAML
double-quoted scalar); a multi-line string ending in one newline is a literal block.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .base import PackageSource

PORT = 8000
"""The port the docker target's image serves on (``ferry serve /models --port 8000``)."""
MIB = 1 << 20
MEMORY_MARGIN = 1.25
"""Memory request = measured peak RSS (load + one run) x this, rounded up to a MiB."""
BODY_HEADROOM_MIB = 512
"""Memory limit = request + this: the server's default caps on request bodies held at once
(--max-inflight, 256 MiB) and on parsing one JSON body (--max-parse-memory, 256 MiB)."""
STARTUP_BASE_S = 30.0
STARTUP_FACTOR = 10.0
"""Startup budget = STARTUP_BASE_S (interpreter start, imports) + STARTUP_FACTOR x the measured
load-and-first-run time (a slower node, the server's warm-up runs)."""
STARTUP_PERIOD_S = 5


@dataclass(frozen=True)
class Footprint:
    """What loading the model and running it once took: seconds and peak RSS (bytes)."""

    load_s: float
    peak_rss_bytes: int
    method: str

    @property
    def memory_request_mib(self) -> int:
        return math.ceil(self.peak_rss_bytes * MEMORY_MARGIN / MIB)

    @property
    def startup_failures(self) -> int:
        """The startup probe's failureThreshold at STARTUP_PERIOD_S."""
        return math.ceil((STARTUP_BASE_S + STARTUP_FACTOR * self.load_s) / STARTUP_PERIOD_S)


def measure_footprint(source: PackageSource) -> Footprint:
    """Load ``source`` (the safe loader), open an ONNX Runtime session and run it once on the
    feeds the server's warm-up uses; the time and the process's peak RSS."""
    from ..feeds import plan_feeds
    from ..measure import PeakMemory
    from ..model import Model
    from ..runtime import OrtRunner

    with PeakMemory() as peak:
        start = time.perf_counter()
        model = Model.load(source.model)
        runner = OrtRunner(model)
        runner.run(plan_feeds(model, session=runner.session).feeds())
        load_s = time.perf_counter() - start
    return Footprint(load_s, peak.rss_bytes, peak.method)


def default_image(source: PackageSource) -> str:
    """``onnxferry/<name>:<version>``: the registry version, the repository's version folder,
    else 1."""
    version = "1"
    if source.registry_ref:
        version = source.registry_ref.rpartition(":")[2]
    elif source.repository is not None:
        version = source.model.parent.name
    return f"onnxferry/{source.name.lower()}:{version}"


def k8s_name(text: str) -> str:
    """``text`` as a DNS-1123 label (lowercase letters, digits, '-'; at most 63)."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].strip("-")
    return name or "model"


_PLAIN = re.compile(r"[A-Za-z_/][A-Za-z0-9_./-]*")
_KEYWORDS = {"true", "false", "yes", "no", "on", "off", "y", "n", "null", "nan", "inf"}


def to_yaml(value: Any) -> str:
    """``value`` (dicts, lists, str, int, float, bool, None) as a block-style YAML document."""
    return "\n".join(_lines(value, 0)) + "\n"


def _lines(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    if isinstance(value, Mapping) and value:
        out = []
        for key, item in value.items():
            name = _scalar(str(key))
            if isinstance(item, (Mapping, list)) and item:
                out.append(f"{pad}{name}:")
                out.extend(_lines(item, indent + 2))
            elif isinstance(item, str) and _literal(item):
                out.append(f"{pad}{name}: |")
                out.extend(f"{pad}  {line}" if line else "" for line in item[:-1].split("\n"))
            else:
                out.append(f"{pad}{name}: {_scalar(item)}")
        return out
    if isinstance(value, list) and value:
        out = []
        for item in value:
            sub = _lines(item, indent + 2)
            out.append(f"{pad}- {sub[0][indent + 2 :]}")
            out.extend(sub[1:])
        return out
    return [pad + _scalar(value)]


def _literal(text: str) -> bool:
    return (
        text.endswith("\n")
        and not text.endswith("\n\n")
        and not text[:1].isspace()
        and all(c in "\n\t" or c.isprintable() for c in text)
    )


def _scalar(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, list):
        return "[]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"no YAML for {value!r}")
        return repr(value)
    text = str(value)
    if _PLAIN.fullmatch(text) and text.lower() not in _KEYWORDS:
        return text
    return json.dumps(text)
