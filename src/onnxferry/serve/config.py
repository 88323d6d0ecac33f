"""Per-model serving configuration: batching, instances x threads, deadlines, versions.

    config = ModelConfig.from_toml(Path("repo/resnet/ferry.toml"))   # UsageError if malformed
    instances, threads = config.parallelism(usable_cores())         # runtime.usable_cores

``ferry.toml`` holds the same fields as ``ModelConfig`` plus a ``[versions]`` table:
``policy = "latest" | "all" | "specific"``, ``latest = N``, ``specific = [1, 3]``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from ..data import parse_toml
from ..errors import UsageError

POLICIES = ("latest", "all", "specific")


@dataclass(frozen=True)
class VersionPolicy:
    """Which numbered versions of a model to serve (Triton's version_policy)."""

    kind: Literal["latest", "all", "specific"] = "latest"
    latest: int = 1
    specific: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in POLICIES:
            raise UsageError(
                f"versions.policy: unknown policy {self.kind!r}", hint="use latest, all or specific"
            )
        if isinstance(self.latest, bool) or not isinstance(self.latest, int) or self.latest < 1:
            raise UsageError(f"versions.latest must be an integer >= 1, got {self.latest!r}")
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in self.specific):
            raise UsageError(
                f"versions.specific must list integers >= 1, got {list(self.specific)!r}"
            )
        if self.kind == "specific" and not self.specific:
            raise UsageError(
                "versions.policy is 'specific' but versions.specific is empty",
                hint="list the versions to serve, e.g. specific = [1, 3]",
            )

    def select(self, available: Iterable[int]) -> list[int]:
        """The versions to serve out of ``available``, ascending."""
        versions = sorted(set(available))
        if self.kind == "all":
            return versions
        if self.kind == "specific":
            wanted = set(self.specific)
            return [v for v in versions if v in wanted]
        return versions[-self.latest :] if versions else []

    def to_triton(self) -> dict[str, Any]:
        if self.kind == "all":
            return {"all": {}}
        if self.kind == "specific":
            return {"specific": {"versions": list(self.specific)}}
        return {"latest": {"num_versions": self.latest}}


# (type, smallest allowed value, whether the smallest value itself is allowed)
_LIMITS: dict[str, tuple[type, float, bool]] = {
    "max_batch_size": (int, 0, True),
    "max_queue_delay_ms": (float, 0, True),
    "max_queue_size": (int, 1, True),
    "instances": (int, 1, True),
    "intra_op_threads": (int, 1, True),
    "timeout_ms": (float, 0, False),
    "allow_nonfinite": (bool, 0, True),
    "spin": (bool, 0, True),
    "inline_max_ms": (float, 0, True),
    "allow_signature_change": (bool, 0, True),
}


@dataclass(frozen=True)
class ModelConfig:
    """How one model is served; every field has a working default.

    ``max_batch_size = 0`` turns dynamic batching off. ``instances`` / ``intra_op_threads``
    left as None are chosen from the usable cores by ``parallelism``.
    """

    max_batch_size: int = 8
    max_queue_delay_ms: float = 0.5
    max_queue_size: int = 256
    instances: int | None = None
    intra_op_threads: int | None = None
    timeout_ms: float | None = None
    allow_nonfinite: bool = True
    spin: bool = True
    """ONNX Runtime's intra-op threads spin between runs (faster runs, busier cores)."""
    inline_max_ms: float = 1.0
    """Run a batch on the event loop thread when every instance is idle and the batch should
    take at most this long: no hand-off to a worker thread and back (0.1-0.2 ms). 0: never."""
    version_policy: VersionPolicy = field(default_factory=VersionPolicy)
    warmup_inputs: str | None = None
    """Feeds for the warm-up run (.npz, .npy, .pb or a test-data directory), relative to the
    model version's directory; default: made by the one feed policy (``feeds.plan_feeds``)."""
    warmup_dims: tuple[tuple[str, int], ...] = ()
    """Sizes of open dims for the warm-up feeds (``[warmup_dims]`` in ferry.toml: NAME = N, or
    "INPUT:AXIS" = N for a dim without a name)."""
    allow_signature_change: bool = False
    """A new version whose inputs differ (names, dtypes, ranks, fixed dims; or an output is
    gone) from the version it takes over from may replace it; by default it is refused and the
    old one keeps serving."""

    def __post_init__(self) -> None:
        for name, (kind, low, inclusive) in _LIMITS.items():
            value = getattr(self, name)
            if value is not None:
                _check_value(name, value, kind, low, inclusive)

    @classmethod
    def from_toml(cls, path: Path) -> ModelConfig:
        """Read ``ferry.toml``; an unreadable file, bad TOML, an unknown key, a wrong type or an
        out-of-range value is a UsageError naming the file and the key."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from e
        try:
            data = parse_toml(text)
        except Exception as e:
            raise UsageError(
                f"{path} is not valid TOML: {e}", hint="see ferry.toml in the serve docs"
            ) from e
        try:
            return cls.from_dict(data)
        except UsageError as e:
            raise UsageError(f"{path}: {e.message}", hint=e.hint) from None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """A config from parsed TOML (the keys of ``ferry.toml``)."""
        known = [f.name for f in fields(cls) if f.name != "version_policy"]
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key == "versions":
                values["version_policy"] = _version_policy(value)
                continue
            if key == "warmup_inputs":
                if not isinstance(value, str) or not value:
                    raise UsageError("warmup_inputs must be a file name", hint='e.g. "warmup.npz"')
                values[key] = value
                continue
            if key == "warmup_dims":
                values[key] = _warmup_dims(value)
                continue
            if key not in known:
                raise UsageError(
                    f"unknown key {key!r}", hint=f"known keys: {', '.join([*known, 'versions'])}"
                )
            kind = _LIMITS[key][0]
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            values[key] = value
        return cls(**values)

    def parallelism(self, cores: int) -> tuple[int, int]:
        """(instances, intra-op threads per instance) for ``cores`` usable cores.

        Explicit settings win; a missing one fills the cores. The default is one instance
        using every core: the lowest latency alone, and the dynamic batcher gives that one
        instance full batches under load. Measured on 2 quiet cores (benchmarks/
        serve_executor.py), 1x2 came within 8% of 2x1 at concurrency 8 on a small CNN,
        beat it by 40% on an MLP, and halved the CNN's latency at concurrency 1.
        """
        cores = max(1, cores)
        if self.instances is not None and self.intra_op_threads is not None:
            return self.instances, self.intra_op_threads
        if self.instances is not None:
            return self.instances, max(1, cores // self.instances)
        if self.intra_op_threads is not None:
            return max(1, cores // self.intra_op_threads), self.intra_op_threads
        return 1, cores


def _warmup_dims(table: Any) -> tuple[tuple[str, int], ...]:
    if not isinstance(table, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in table.values()
    ):
        raise UsageError(
            "warmup_dims must be a table of sizes of at least 1",
            hint='e.g. [warmup_dims] height = 48, "x:3" = 192',
        )
    return tuple((str(k), int(v)) for k, v in table.items())


def _check_value(name: str, value: Any, kind: type, low: float, inclusive: bool) -> None:
    wanted = {bool: "true or false", int: "an integer", float: "a number"}[kind]
    if kind is bool:
        if not isinstance(value, bool):
            raise UsageError(f"{name} must be {wanted}, got {value!r}")
        return
    numeric = isinstance(value, int) or (kind is float and isinstance(value, float))
    if isinstance(value, bool) or not numeric:
        raise UsageError(f"{name} must be {wanted}, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < low or (number == low and not inclusive):
        bound = f">= {low:g}" if inclusive else f"> {low:g}"
        raise UsageError(f"{name} must be {bound}, got {value!r}")


def _version_policy(table: Any) -> VersionPolicy:
    if not isinstance(table, dict):
        raise UsageError(
            "versions must be a table", hint='write [versions] and policy = "latest" below it'
        )
    unknown = sorted(set(table) - {"policy", "latest", "specific"})
    if unknown:
        raise UsageError(
            f"unknown key 'versions.{unknown[0]}'", hint="known keys: policy, latest, specific"
        )
    policy = table.get("policy", "latest")
    if not isinstance(policy, str):
        raise UsageError(f"versions.policy must be a string, got {policy!r}")
    specific = table.get("specific", [])
    if not isinstance(specific, list):
        raise UsageError(f"versions.specific must be a list of integers, got {specific!r}")
    kind: Any = policy
    return VersionPolicy(kind, table.get("latest", 1), tuple(specific))
