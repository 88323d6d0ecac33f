"""What a batch run reports while it runs (``BatchProgress``) and when it ends (``BatchSummary``).

    p = BatchProgress(done=500, total=2000, skipped=0, elapsed_s=2.0)
    p.rate_per_s, p.eta_s                       # 250.0 rows/s, 6.0 s left
    s = BatchSummary(engine="local", model="m", source="in.npy", output="out", rows=10,
                     processed=10, shards_written=1, shards_skipped=0, seconds=0.5)
    s.rows_per_s, s.to_dict()["rows_per_s"], s.tables()

``BatchSummary`` is a ReportBody: ``ferry batch --json`` prints it inside the usual report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..report import Table, human_size


@dataclass(frozen=True)
class BatchProgress:
    """Rows ``done`` of ``total`` (``skipped`` of them in finished shards of an earlier run)
    after ``elapsed_s`` seconds of this run."""

    done: int
    total: int
    skipped: int
    elapsed_s: float

    @property
    def rate_per_s(self) -> float:
        """Rows per second this run has processed (skipped rows do not count)."""
        return (self.done - self.skipped) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the current rate (None before there is a rate)."""
        rate = self.rate_per_s
        return (self.total - self.done) / rate if rate > 0 else None


ProgressCallback = Callable[[BatchProgress], None]


@dataclass
class BatchSummary:
    """One run: rows in the input, rows this run processed, shards written and skipped (done
    by an earlier run), seconds, and the sizes it ran with."""

    engine: str
    model: str
    source: str
    output: str
    rows: int
    processed: int
    shards_written: int
    shards_skipped: int
    seconds: float
    output_format: str = "parquet"
    batch_size: int = 0
    shard_rows: int = 0
    workers: int = 0
    threads_per_worker: int = 0
    in_flight: int = 0
    max_memory_bytes: int = 0
    peak_rss_bytes: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def rows_per_s(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    ok = True

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rows_per_s": self.rows_per_s}

    def tables(self) -> list[Table]:
        rows = [
            ("rows", self.rows),
            ("processed", self.processed),
            ("shards written", self.shards_written),
            ("shards skipped", self.shards_skipped),
            ("seconds", round(self.seconds, 3)),
            ("rows/s", round(self.rows_per_s, 1)),
            ("batch size", self.batch_size),
            ("shard rows", self.shard_rows),
            ("workers x threads", f"{self.workers} x {self.threads_per_worker}"),
        ]
        if self.engine == "local":  # Ray holds the data of a ray run, in its workers
            rows += [
                ("batches in flight", self.in_flight),
                ("peak RSS", human_size(self.peak_rss_bytes)),
                ("memory cap", human_size(self.max_memory_bytes)),
            ]
        title = f"batch {self.model} on {self.source} -> {self.output} ({self.engine})"
        return [Table(title, ("what", "value"), rows)]
