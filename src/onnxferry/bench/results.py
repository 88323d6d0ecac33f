"""What a bench reports: BenchResult rows of a local run, LoadRow levels of a load test.

Both are built on one ``measure.LatencyStats`` (``.latency``) and expose its figures under
their stable JSON keys; ``BenchSuite`` and ``LoadReport`` are the report bodies (``ok``,
``to_dict``, ``tables``) of ``bench(models)`` and ``bench(url=...)``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ..measure import LatencyStats
from ..report import Table

BENCH_COLUMNS = (
    "model",
    "digest",
    "provider",
    "threads",
    "batch",
    "concurrency",
    "warmup",
    "iterations",
    "wall_s",
    "mean_ms",
    "std_ms",
    "min_ms",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "max_ms",
    "iqr_ms",
    "cv",
    "inferences_per_s",
    "samples_per_s",
    "peak_rss_bytes",
    "memory_method",
    "session_init_ms",
    "energy_j",
    "energy_per_inference_j",
    "price_per_hour",
    "cost_per_million_inferences",
    "cost_per_million_samples",
    "input_shapes",
)
"""The keys of ``BenchResult.to_dict()`` and the CSV columns, in order."""


@dataclass(frozen=True)
class BenchResult:
    """Figures for one model in one configuration (provider, threads, batch, concurrency).

    ``latency`` holds the per-request latencies (ms) over the measured region; its figures
    are attributes here too (``p50_ms``, ``cv``, ...; ``iterations`` is its count and
    ``wall_s`` its window). ``threads`` None means ONNX Runtime's default.
    ``memory_method`` says how ``peak_rss_bytes`` was read (see ``measure.PeakMemory``).
    ``energy_j`` is what the RAPL package counters (``energy``) counted over the timed window,
    None where they cannot be read; ``price_per_hour`` (USD) prices the machine, None when
    not given. An inference is one run at the row's batch size.
    """

    model: str
    digest: str
    provider: str
    threads: int | None
    batch: int
    concurrency: int
    warmup: int
    latency: LatencyStats
    peak_rss_bytes: int
    memory_method: str
    session_init_ms: float
    input_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    energy_j: float | None = None
    price_per_hour: float | None = None

    @property
    def iterations(self) -> int:
        return self.latency.count

    @property
    def wall_s(self) -> float:
        return self.latency.window_s

    @property
    def mean_ms(self) -> float:
        return self.latency.mean_ms

    @property
    def std_ms(self) -> float:
        return self.latency.std_ms

    @property
    def min_ms(self) -> float:
        return self.latency.min_ms

    @property
    def p50_ms(self) -> float:
        return self.latency.p50_ms

    @property
    def p90_ms(self) -> float:
        return self.latency.p90_ms

    @property
    def p99_ms(self) -> float:
        return self.latency.p99_ms

    @property
    def max_ms(self) -> float:
        return self.latency.max_ms

    @property
    def iqr_ms(self) -> float:
        return self.latency.iqr_ms

    @property
    def cv(self) -> float:
        return self.latency.cv

    @property
    def inferences_per_s(self) -> float:
        return self.latency.throughput_per_s

    @property
    def samples_per_s(self) -> float:
        return self.inferences_per_s * self.batch

    @property
    def energy_per_inference_j(self) -> float | None:
        """Joules per run over the timed window (package-wide), None without counters."""
        if self.energy_j is None or not self.iterations:
            return None
        return self.energy_j / self.iterations

    @property
    def cost_per_million_inferences(self) -> float | None:
        """USD for a million runs at this throughput: price / (runs per hour) * 1e6."""
        if self.price_per_hour is None or self.inferences_per_s <= 0:
            return None
        return self.price_per_hour / (self.inferences_per_s * 3600) * 1e6

    @property
    def cost_per_million_samples(self) -> float | None:
        cost = self.cost_per_million_inferences
        return None if cost is None else cost / self.batch

    def to_dict(self) -> dict[str, Any]:
        d = {key: getattr(self, key) for key in BENCH_COLUMNS}
        d["input_shapes"] = {k: list(v) for k, v in self.input_shapes.items()}
        return d


@dataclass
class BenchSuite:
    """Every BenchResult of one ``bench`` call, plus the configurations that could not run."""

    results: list[BenchResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    energy: str = "unavailable (not measured)"
    """Where ``energy_j`` comes from (``energy.Rapl.describe``), or why it is unavailable."""

    @property
    def ok(self) -> bool:
        return bool(self.results)

    @property
    def cost(self) -> str:
        """The price behind the costs, or why there are none."""
        price = self.settings.get("price_per_hour")
        if price is None:
            return "unavailable (give --price-per-hour)"
        return f"at {price:g} USD per hour"

    def to_dict(self) -> dict[str, Any]:
        return {
            "results": [r.to_dict() for r in self.results],
            "skipped": list(self.skipped),
            "settings": dict(self.settings),
            "environment": dict(self.environment),
            "energy": self.energy,
            "cost": self.cost,
        }

    def to_csv(self) -> str:
        """Header row, then one row per result (input shapes as JSON; threads empty = default)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(BENCH_COLUMNS)
        for r in self.results:
            d = r.to_dict()
            d["input_shapes"] = json.dumps(d["input_shapes"], sort_keys=True)
            writer.writerow(["" if d[c] is None else d[c] for c in BENCH_COLUMNS])
        return out.getvalue()

    def tables(self) -> list[Table]:
        several = len({r.model for r in self.results}) > 1
        # Request counts and inferences/s are in the title, the JSON and the CSV.
        columns = ["model", "provider", "threads", "batch", "p50 ms", "p90 ms", "p99 ms"]
        columns += ["max ms", "std ms", "samples/s", "peak MiB"]
        energy = any(r.energy_j is not None for r in self.results)
        priced = any(r.price_per_hour is not None for r in self.results)
        columns += ["J/inference"] * energy + ["USD/M inferences"] * priced
        if several:
            columns.append("speedup (p50)")
        first_model = self.results[0].model if self.results else None
        baseline = {
            (r.provider, r.threads, r.batch): r.p50_ms
            for r in self.results
            if r.model == first_model
        }
        rows: list[list[Any]] = []
        for r in self.results:
            row: list[Any] = [r.model, r.provider, "auto" if r.threads is None else r.threads]
            row += [r.batch, r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms, r.std_ms]
            row += [r.samples_per_s, r.peak_rss_bytes / 2**20]
            row += [r.energy_per_inference_j] * energy + [r.cost_per_million_inferences] * priced
            if several:
                base = baseline.get((r.provider, r.threads, r.batch))
                row.append(base / r.p50_ms if base is not None and r.p50_ms > 0 else None)
            rows.append(row)
        title = "Benchmark"
        if self.settings:
            st = self.settings
            amount = (
                f"{st['duration_s']} s" if st.get("duration_s") else f"{st['iterations']} requests"
            )
            title += f" ({amount} per row, warmup {st['warmup']}, concurrency {st['concurrency']})"
        tables = [Table(title, columns, rows)]
        if self.skipped:
            tables.append(Table("Skipped", ["reason"], [[s] for s in self.skipped]))
        return tables

    def figures(self) -> list[str]:
        """p50 latency against batch size per model and configuration when there are several
        batch sizes, else one bar per row when there are several rows."""
        from ..plots import bars_svg, lines_svg

        def name(r: BenchResult) -> str:
            return f"{r.model} {r.provider} threads={'auto' if r.threads is None else r.threads}"

        series: dict[str, list[tuple[float, float]]] = {}
        for r in self.results:
            series.setdefault(name(r), []).append((r.batch, r.p50_ms))
        if any(len(points) > 1 for points in series.values()):
            lines = {label: sorted(points) for label, points in series.items()}
            return [lines_svg(lines, "batch size", "p50 latency (ms)", "latency vs batch")]
        if len(self.results) > 1:
            bars = [(f"{name(r)} batch={r.batch}", r.p50_ms) for r in self.results]
            return [bars_svg(bars, "p50 latency (ms)", "latency per configuration")]
        return []


# --- load tests -------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSplit:
    """Server-side time per request over one window, from the statistics extension."""

    requests: int  # successful inferences the server counted
    executions: int  # model runs (batches)
    queue_ms: float
    compute_input_ms: float
    compute_infer_ms: float
    compute_output_ms: float

    @property
    def compute_ms(self) -> float:
        return self.compute_input_ms + self.compute_infer_ms + self.compute_output_ms

    @property
    def batch_size(self) -> float | None:
        """Average inferences per model run (the batches the server formed)."""
        return self.requests / self.executions if self.executions else None


@dataclass(frozen=True)
class LoadRow:
    """One concurrency level. ``latency`` covers successful requests only (None when none
    succeeded), over the window up to the last success; ``wall_s`` runs from the start until
    every worker returned."""

    concurrency: int
    errors: int
    wall_s: float
    latency: LatencyStats | None
    server: ServerSplit | None = None
    first_error: str | None = None

    @property
    def requests(self) -> int:
        """Successful requests."""
        return 0 if self.latency is None else self.latency.count

    @property
    def throughput_per_s(self) -> float:
        """Successful requests per second, up to the last success."""
        return 0.0 if self.latency is None else self.latency.throughput_per_s

    @property
    def p50_ms(self) -> float | None:
        return None if self.latency is None else self.latency.p50_ms

    @property
    def p90_ms(self) -> float | None:
        return None if self.latency is None else self.latency.p90_ms

    @property
    def p99_ms(self) -> float | None:
        return None if self.latency is None else self.latency.p99_ms

    @property
    def mean_ms(self) -> float | None:
        return None if self.latency is None else self.latency.mean_ms

    @property
    def max_ms(self) -> float | None:
        return None if self.latency is None else self.latency.max_ms

    def to_dict(self) -> dict[str, Any]:
        d = {key: getattr(self, key) for key in _LOAD_KEYS}
        if self.server is not None:
            d["server"] = asdict(self.server)
            d["server"]["compute_ms"] = self.server.compute_ms
            d["server"]["batch_size"] = self.server.batch_size
        return d


_LOAD_KEYS = (
    "concurrency",
    "requests",
    "errors",
    "wall_s",
    "throughput_per_s",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "mean_ms",
    "max_ms",
    "server",
    "first_error",
)
"""The keys of ``LoadRow.to_dict()``, in order."""


@dataclass
class LoadReport:
    """Every level of one ``load_test``; implements the report body protocol."""

    url: str
    model: str
    version: str | None
    binary: bool
    duration_s: float
    warmup_s: float
    inputs: dict[str, dict[str, Any]]  # name -> {"datatype", "shape"} actually sent
    rows: list[LoadRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.rows) and all(r.requests > 0 and r.errors == 0 for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "model": self.model,
            "version": self.version,
            "binary": self.binary,
            "duration_s": self.duration_s,
            "warmup_s": self.warmup_s,
            "inputs": {k: dict(v) for k, v in self.inputs.items()},
            "rows": [r.to_dict() for r in self.rows],
            "notes": list(self.notes),
        }

    def table(self) -> Table:
        encoding = "binary" if self.binary else "JSON"
        name = self.model if self.version is None else f"{self.model} v{self.version}"
        title = f"Load test: {name} at {self.url} ({encoding}, {self.duration_s:g} s per level)"
        columns = ["concurrency", "requests", "errors", "infer/s", "p50 ms", "p90 ms", "p99 ms"]
        columns += ["server queue ms", "server compute ms", "server batch"]
        rows: list[list[Any]] = []
        for r in self.rows:
            s = r.server
            row: list[Any] = [r.concurrency, r.requests, r.errors, r.throughput_per_s]
            row += [r.p50_ms, r.p90_ms, r.p99_ms]
            row += [None, None, None] if s is None else [s.queue_ms, s.compute_ms, s.batch_size]
            rows.append(row)
        return Table(title, columns, rows)

    def tables(self) -> list[Table]:
        tables = [self.table()]
        failed = [[r.concurrency, r.first_error] for r in self.rows if r.first_error]
        if failed:
            tables.append(Table("First error per level", ["concurrency", "error"], failed))
        if self.notes:
            tables.append(Table("Notes", ["note"], [[n] for n in self.notes]))
        return tables
