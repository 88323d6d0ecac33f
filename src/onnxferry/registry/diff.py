"""Two registered versions side by side: signature, opsets, operators, size, parity, latency.

    report = diff(reg, "resnet:1", "resnet:2")
    report.result.ops_changed            # [("Relu", 1, 2), ...]: operator counts that differ
    report.result.parity.ok              # B's outputs against A's on the same inputs
    print(report.to_text())

Parity runs B against A on A's golden inputs (else B's, else one generated set), at
``tolerance``; latency is the promotion gate's measurement (``sidebyside.measure_pair``,
batch 1, interleaved rounds). Signatures are checked with ``public_key``, else the
registry's trusted keys; with neither, a signed version shows as "signed (not checked: no
key)". The report is ok (exit 0) when B's outputs match A's within the tolerance, else
exit 1, as ``ferry compare``.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import FerryError
from ..parity import Parity, Tolerance
from ..report import Report, Table, human_size
from .access import Opened, opened
from .core import Registry
from .gates import signature_gate
from .records import Ref, VersionRecord
from .sidebyside import ROUNDS, LatencyComparison, compare_versions, comparison_inputs, measure_pair
from .trust import key_fingerprint, trusted_keys


@dataclass
class Side:
    """What the diff knows of one version."""

    record: VersionRecord
    signature: str
    signature_ok: bool | None
    opsets: dict[str, int]
    ops: dict[str, int]
    parameters: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "ref": self.record.ref,
            "digest": self.record.digest,
            "size": self.record.size,
            "signature": self.signature,
            "signature_ok": self.signature_ok,
            "opsets": self.opsets,
            "ops": self.ops,
            "nodes": sum(self.ops.values()),
            "parameters": self.parameters,
        }


@dataclass
class VersionDiff:
    """Version ``a`` against version ``b`` (ReportBody); ok when B's outputs match A's."""

    a: Side
    b: Side
    parity: Parity | None = None
    inputs: str = ""
    latency: LatencyComparison | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.parity is not None and self.parity.ok

    @property
    def ops_changed(self) -> list[tuple[str, int, int]]:
        """(operator, count in A, count in B) for every operator whose count differs."""
        names = sorted(set(self.a.ops) | set(self.b.ops))
        counts = [(n, self.a.ops.get(n, 0), self.b.ops.get(n, 0)) for n in names]
        return [c for c in counts if c[1] != c[2]]

    @property
    def opsets_changed(self) -> dict[str, tuple[int | None, int | None]]:
        domains = sorted(set(self.a.opsets) | set(self.b.opsets))
        pairs = {d: (self.a.opsets.get(d), self.b.opsets.get(d)) for d in domains}
        return {d: p for d, p in pairs.items() if p[0] != p[1]}

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a.to_dict(),
            "b": self.b.to_dict(),
            "same_digest": self.a.record.digest == self.b.record.digest,
            "opsets_changed": {d: list(p) for d, p in self.opsets_changed.items()},
            "ops_changed": [{"op": n, "a": ca, "b": cb} for n, ca, cb in self.ops_changed],
            "inputs": self.inputs,
            "parity": self.parity.to_dict() if self.parity else None,
            "latency": self.latency.to_dict() if self.latency else None,
            "problems": list(self.problems),
        }

    def tables(self) -> list[Table]:
        a, b = self.a, self.b
        rows: list[tuple[str, Any, Any]] = [
            ("digest", a.record.digest[:16], b.record.digest[:16]),
            ("size", human_size(a.record.size), human_size(b.record.size)),
            ("signature", a.signature, b.signature),
            ("opsets", _opsets(a.opsets), _opsets(b.opsets)),
            ("nodes", sum(a.ops.values()), sum(b.ops.values())),
            ("parameters", a.parameters, b.parameters),
            ("aliases", ", ".join(a.record.aliases) or "-", ", ".join(b.record.aliases) or "-"),
        ]
        if self.latency is not None:
            lat = self.latency
            rows.append(("p50 ms at batch 1", lat.reference_p50_ms, lat.candidate_p50_ms))
            rows.append(("latency ratio", "1x", f"{lat.ratio:.2f}x (noise +-{lat.noise:.0%})"))
        if self.parity is not None:
            rows.append(("parity", f"reference, on {self.inputs}", self.parity.summary()))
        tables = [Table(f"diff {a.record.ref} {b.record.ref}", ("what", "A", "B"), rows)]
        if self.ops_changed:
            changed = [(n, ca, cb, f"{cb - ca:+d}") for n, ca, cb in self.ops_changed]
            tables.append(Table("operators that differ", ("op", "A", "B", "change"), changed))
        if self.parity is not None and not self.parity.ok:
            tables += self.parity.tables()
        if self.problems:
            tables.append(Table("problems", ("problem",), [(p,) for p in self.problems]))
        return tables


def diff(
    registry: Registry,
    ref_a: str | Ref,
    ref_b: str | Ref,
    *,
    key: bytes | None = None,
    public_key: str | Path | None = None,
    tolerance: Tolerance | None = None,
    latency: bool = True,
    rounds: int = ROUNDS,
) -> Report[VersionDiff]:
    """Compare two versions (of any names); ``latency=False`` skips the timing."""
    if public_key is not None:
        key_fingerprint(public_key)  # a key the user gave that cannot be used: exit 2 now
    tolerance = tolerance or Tolerance()
    records = [registry.get(ref_a), registry.get(ref_b)]
    with ExitStack() as stack:
        a, b = (stack.enter_context(opened(registry, r, key=key)) for r in records)
        result = VersionDiff(
            _side(registry, a, public_key, key), _side(registry, b, public_key, key)
        )
        try:
            feeds, result.inputs = comparison_inputs(a, b)
            result.parity = compare_versions(a, b, feeds, tolerance)
            if latency:
                result.latency = measure_pair(a, b, feeds[0], rounds=rounds)
        except FerryError as e:
            result.problems.append(str(e))
    return Report("registry diff", result)


def _side(
    registry: Registry, version: Opened, public_key: str | Path | None, key: bytes | None
) -> Side:
    record, model = version.record, version.model
    if record.signature is not None and public_key is None and not trusted_keys(registry):
        status, ok = "signed (not checked: no key)", None
    else:
        gate = signature_gate(registry, record, public_key, key=key)
        status, ok = ("verified: " if gate.ok else "FAILED: ") + gate.detail, gate.ok
    return Side(
        record, status, ok, model.opset_imports, dict(model.ops_histogram), model.parameter_count
    )


def _opsets(opsets: dict[str, int]) -> str:
    return ", ".join(f"{d} {v}" for d, v in sorted(opsets.items()))
