"""Per-model serving configuration: batching, instances x threads, deadlines, versions.

    config = ModelConfig.from_toml(Path("repo/resnet/ferry.toml"))   # UsageError if malformed
    instances, threads = config.parallelism(usable_cores())         # runtime.usable_cores
    parse_bytes("64MiB", "cache_bytes")                             # 67108864
    RepositoryConfig.read(Path("repo"))          # repo/ferry.toml: memory_budget = "2GiB"

``ferry.toml`` holds the same fields as ``ModelConfig`` plus a ``[versions]`` table:
``policy = "latest" | "all" | "specific"``, ``latest = N``, ``specific = [1, 3]``. Sizes
(``cache_bytes``, ``memory_budget``) are a number of bytes or a string such as "64MiB". A
``ferry.toml`` at the top of a repository holds ``RepositoryConfig`` (``memory_budget``).
``provider = "openvino"`` (or ``"tensorrt"``, with ``precision = "fp16"``) picks where the
model runs; a provider that cannot run it fails the load (no fallback to cpu).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..data import parse_toml
from ..errors import UsageError, read_user_text

if TYPE_CHECKING:
    from ..devices import Device

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
    "cache_bytes": (int, 0, True),
    "deterministic": (bool, 0, True),
    "arena": (bool, 0, True),
}

ARENA_STRATEGIES = ("next_power_of_two", "same_as_requested")
"""ONNX Runtime's arena extend strategies (kNextPowerOfTwo, kSameAsRequested), as ferry.toml
spells them."""


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
    provider: str = "cpu"
    """The execution provider (cpu, cuda, tensorrt, openvino, ...): ``runtime.SessionConfig``."""
    devices: tuple[str, ...] = ()
    """A device pool (``devices.parse_devices``: "cuda:0", "cuda:1"): ``instances`` sessions
    (default 1) on each device, the batcher spreading batches over them; sets the provider."""
    precision: str = "fp32"
    """What tensorrt (fp16, int8) or openvino (fp16) computes in."""
    engine_cache: str | None = None
    """tensorrt: the engine cache's root (default: ``precision.engine_cache_root()``)."""
    calibration_table: str | None = None
    """tensorrt int8 on a model without Q/DQ nodes: TensorRT's calibration table."""
    cache_bytes: int = 0
    """Bytes of answers the response cache keeps (LRU by input digest; 0: no cache)."""
    deterministic: bool = True
    """False: the model's answers may differ for the same inputs, so none is ever cached."""
    arena: bool = True
    """ONNX Runtime's CPU memory arena (``enable_cpu_mem_arena``); false returns freed run
    memory to the system at once, at some cost per run."""
    arena_extend_strategy: str = "next_power_of_two"
    """How an arena grows: ``next_power_of_two`` (each session's own arena, ORT's default) or
    ``same_as_requested`` (the process's shared CPU arena, registered with that strategy:
    ONNX Runtime has no per-session setting for CPU)."""

    def __post_init__(self) -> None:
        for name, (kind, low, inclusive) in _LIMITS.items():
            value = getattr(self, name)
            if value is not None:
                _check_value(name, value, kind, low, inclusive)
        from ..devices import pool_provider
        from ..precision import check_precision
        from ..runtime import check_threads, provider_name, short_provider_name

        for name in ("instances", "intra_op_threads"):  # each instance is a session
            if getattr(self, name) is not None:
                check_threads(getattr(self, name), name)

        provider = short_provider_name(provider_name(self.provider))
        if self.devices:
            provider = pool_provider(self.device_pool, provider)
        check_precision(provider, self.precision)
        if self.arena_extend_strategy not in ARENA_STRATEGIES:
            raise UsageError(
                f"arena_extend_strategy must be one of {', '.join(ARENA_STRATEGIES)}, got "
                f"{self.arena_extend_strategy!r}"
            )
        if self.arena_extend_strategy == "same_as_requested" and not self.arena:
            raise UsageError(
                "arena_extend_strategy applies to an arena, and arena = false turns it off",
                hint="drop one of the two",
            )

    @property
    def device_pool(self) -> list[Device]:
        """``devices`` parsed (empty: no pool); UsageError when malformed."""
        from ..devices import parse_devices

        return parse_devices(self.devices) if self.devices else []

    @property
    def cached(self) -> bool:
        """Whether answers are cached: a cache size is set and the model is deterministic."""
        return self.cache_bytes > 0 and self.deterministic

    @classmethod
    def from_toml(cls, path: Path) -> ModelConfig:
        """Read ``ferry.toml``; an unreadable file, bad TOML, an unknown key, a wrong type or an
        out-of-range value is a UsageError naming the file and the key."""
        text = read_user_text(path, "", UsageError)
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
            if key == "cache_bytes":
                values[key] = parse_bytes(value, key)
                continue
            if key == "devices":
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise UsageError(
                        f"devices must be a list of strings, got {value!r}",
                        hint='e.g. devices = ["cuda:0", "cuda:1"]',
                    )
                values[key] = tuple(value)
                continue
            if key == "arena_extend_strategy":
                if not isinstance(value, str):
                    raise UsageError(f"{key} must be a string, got {value!r}")
                values[key] = value
                continue
            if key in _TEXT:
                if not isinstance(value, str) or not value:
                    raise UsageError(f"{key} must be a string, got {value!r}")
                values[key] = value
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


_TEXT = ("provider", "precision", "engine_cache", "calibration_table")


_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_bytes(value: Any, name: str) -> int:
    """A size in bytes from an integer or a string: "64MiB", "2GiB", "512 KiB", "1.5GB"
    (KiB/MiB/GiB/TiB are powers of 1024, KB/MB/GB/TB and K/M/G/T of 1000). UsageError
    naming ``name`` otherwise."""
    import re

    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    hint = 'a number of bytes, or a string such as "64MiB" or "2GiB"'
    text = value.lower() if isinstance(value, str) else ""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*", text)
    if match is None or (match[3] and not match[2]):
        raise UsageError(f"{name} must be a size, got {value!r}", hint=hint)
    number, prefix, binary = match.groups()
    unit = 1024 ** "_kmgt".index(prefix) if binary else _UNITS[prefix]
    return int(float(number) * unit)


@dataclass(frozen=True)
class RepositoryConfig:
    """Settings of a whole repository, from ``ferry.toml`` at its top (read at start).

    ``memory_budget``: bytes the loaded models' sessions may hold together; past it idle
    models are unloaded, least recently used first, and reloaded on their next request
    (``budget.MemoryBudget``). None: no budget.
    """

    memory_budget: int | None = None

    @classmethod
    def read(cls, repository: Path) -> RepositoryConfig:
        """``repository/ferry.toml`` (defaults when there is none); UsageError naming the
        file and the key when it is malformed."""
        path = Path(repository) / "ferry.toml"
        if not path.is_file():
            return cls()
        text = read_user_text(path, "", UsageError)
        try:
            data = parse_toml(text)
        except Exception as e:
            raise UsageError(
                f"{path} is not valid TOML: {e}", hint="see ferry.toml in the serve docs"
            ) from e
        unknown = sorted(set(data) - {"memory_budget"})
        if unknown:
            raise UsageError(
                f"{path}: unknown key {unknown[0]!r}",
                hint="a repository's ferry.toml holds memory_budget; a model's settings go "
                "in <name>/ferry.toml",
            )
        if "memory_budget" not in data:
            return cls()
        budget = parse_bytes(data["memory_budget"], f"{path}: memory_budget")
        if budget <= 0:
            raise UsageError(f"{path}: memory_budget must be above 0, got {budget}")
        return cls(budget)


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
