"""What a batch run decides before it starts: sizes, the memory it may hold, and whether an
output folder belongs to this run (so a rerun resumes it) or to another one.

    parse_size("2GiB"), parse_size("512MiB"), parse_size(10**9)       # bytes
    slots = in_flight(budget=1 << 30, baseline=200 << 20, per_batch=64 << 20, work=8 << 20,
                      workers=2)                                      # batches held at once
    manifest = Manifest.of(model, source, shard_rows=4096, output_format="parquet")
    manifest.claim(Path("out"))            # writes out/_ferry_batch.json, or checks it matches

Memory: the pipeline holds at most ``slots`` batches at once (read, running or waiting to be
written; a semaphore counts them), so its data is ``slots x (input + output bytes of a
batch)`` plus each worker's working memory, on top of the process's baseline (interpreter,
model, sessions). ``in_flight`` picks ``slots`` from ``--max-memory`` with the sizes measured
on the first batch, and refuses a budget that cannot hold even one batch.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .._version import __version__
from ..atomic import write_text_atomic
from ..devices import Device
from ..errors import UsageError
from ..model import Model
from ..report import human_size
from .sinks import Shard
from .sources import Source
from .summary import BatchSummary

MANIFEST = "_ferry_batch.json"
DEFAULT_MAX_MEMORY = 2 << 30
TARGET_BATCH_BYTES = 16 << 20
"""A batch size chosen for the user holds about this much input (1 to 1024 rows)."""
SHARD_BATCHES = 64
"""A shard size chosen for the user is this many batches."""
MAX_SLOTS_PER_WORKER = 4
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_UNITS |= {"kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS |= {"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}


def parse_size(value: int | str) -> int:
    """Bytes from an int or a text such as "2GiB", "512MiB", "1.5GB", "100000"; UsageError
    for anything else."""
    if isinstance(value, int):
        size = value
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", value)
        unit = m.group(2).lower() if m else ""
        if m is None or unit not in _UNITS:
            raise UsageError(
                f"cannot read the size {value!r}", hint="write e.g. 2GiB, 512MiB or 1GB"
            )
        size = int(float(m.group(1)) * _UNITS[unit])
    if size <= 0:
        raise UsageError(f"a memory size must be positive, got {value!r}", hint="e.g. 2GiB")
    return size


def default_batch_size(row_bytes: int) -> int:
    """Rows per batch when the user gives none: about TARGET_BATCH_BYTES of input, 1 to 1024."""
    return max(1, min(1024, TARGET_BATCH_BYTES // max(1, row_bytes)))


def in_flight(*, budget: int, baseline: int, per_batch: int, work: int, workers: int) -> int:
    """Batches the pipeline may hold at once within ``budget`` bytes: at least 1, at most
    MAX_SLOTS_PER_WORKER per worker; UsageError when not even one fits."""
    free = budget - baseline - workers * work
    slots = free // max(1, per_batch)
    if slots < 1:
        need = baseline + workers * work + per_batch
        raise UsageError(
            f"--max-memory {human_size(budget)} cannot hold one batch: the process needs "
            f"{human_size(baseline)}, a batch {human_size(per_batch)} of data and "
            f"{human_size(work)} per worker to run (at least {human_size(need)})",
            hint="lower --batch-size or --workers, or raise --max-memory",
        )
    return int(min(slots, MAX_SLOTS_PER_WORKER * workers + 1))


def current_rss() -> int:
    """This process's resident memory now (bytes; 0 where it cannot be read)."""
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/self/statm") as f:
                import os

                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return 0
    return 0


@dataclass(frozen=True)
class Manifest:
    """What makes one run's shards (the model, the input, the shard size, the format): a
    folder is resumed only by a run with the same manifest."""

    model_sha256: str
    source: list[Any]
    rows: int
    shard_rows: int
    output_format: str
    onnxferry: str = __version__

    @classmethod
    def of(cls, model: Model, source: Source, *, shard_rows: int, output_format: str) -> Manifest:
        return cls(model.digest, source.fingerprint(), source.rows, shard_rows, output_format)

    def claim(self, outdir: Path) -> bool:
        """Write the manifest into ``outdir`` (made if missing); True when it was there and
        matches (a resumed run). UsageError when the folder holds another run's shards."""
        path = outdir / MANIFEST
        mine = asdict(self)
        if path.is_file():
            try:
                theirs = json.loads(path.read_text())
            except (OSError, ValueError):
                theirs = None
            same = isinstance(theirs, dict) and all(
                theirs.get(k) == v for k, v in mine.items() if k != "onnxferry"
            )
            if not same:
                changed = [
                    k for k, v in mine.items() if not isinstance(theirs, dict) or theirs.get(k) != v
                ]
                raise UsageError(
                    f"{outdir} holds the output of another run ({', '.join(changed)} differ)",
                    hint="give a new -o folder, or remove this one to start over",
                )
            return True
        foreign = (
            sorted(p.name for p in outdir.iterdir() if not p.name.startswith("."))
            if outdir.is_dir()
            else []
        )
        if foreign:
            raise UsageError(
                f"{outdir} holds files but no {MANIFEST} ({', '.join(foreign[:3])}"
                f"{', ...' if len(foreign) > 3 else ''}): not a `ferry batch` output",
                hint="give a new -o folder, or remove this one to start over",
            )
        outdir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(mine, indent=2) + "\n")
        return False


@dataclass
class Job:
    """What one local run does: ``todo`` shards of ``source`` through ``model`` into
    ``outdir``; ``skipped`` ones were finished by an earlier run."""

    model: Model
    source: Source
    outdir: Path
    todo: list[Shard]
    batch_size: int
    skipped: list[Shard] = field(default_factory=list)
    output_format: str = "parquet"
    workers: int = 1
    threads: int | None = None
    max_memory: int = DEFAULT_MAX_MEMORY
    provider: str = "cpu"
    fixed_batch: int | None = None
    ragged: tuple[str, ...] = ()
    """Outputs sized by the data (``graphs.sized_by_data``): run a row at a time, stored as
    lists."""
    notes: list[str] = field(default_factory=list)
    devices: list[Device] = field(default_factory=list)
    """A device pool: one session per device (``workers`` is its size)."""

    def summary(self, engine: str) -> BatchSummary:
        """This job's summary before it runs (nothing processed yet); each engine adds its
        own sizes."""
        return BatchSummary(
            engine=engine,
            model=self.model.name,
            source=str(self.source.path),
            output=str(self.outdir),
            rows=self.source.rows,
            processed=0,
            shards_written=0,
            shards_skipped=len(self.skipped),
            seconds=0.0,
            output_format=self.output_format,
            batch_size=self.batch_size,
            notes=list(self.notes),
        )
